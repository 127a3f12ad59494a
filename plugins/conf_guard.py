"""Reject DAG-run conf keys the DAG does not declare: Airflow accepts them silently, we do not."""

from __future__ import annotations

from typing import Any

from airflow.sdk import task


def unknown_conf_keys(conf: dict[str, Any] | None, declared: set[str]) -> list[str]:
    return sorted(set(conf or {}) - declared)


@task(task_id="check_conf", retries=0)
def check_conf(**context: Any) -> None:
    """First task of every DAG: a typo in `conf` fails the run at once, naming the key."""
    declared = set(context["dag"].params.keys())
    unknown = unknown_conf_keys(context["dag_run"].conf, declared)
    if unknown:
        raise ValueError(
            f"dag run conf has unknown key(s) {', '.join(unknown)}; "
            f"{context['dag'].dag_id} accepts only: {', '.join(sorted(declared)) or '(none)'}"
        )
