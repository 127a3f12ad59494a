"""MLflow runs for the pipelines: the one place that talks to MLflow tracking.

A run is found again by its `llmops.run_key` tag, so a retried task (or a resumed training) keeps logging into the
run its first attempt opened instead of leaving a half-finished duplicate. Without a tracking URI nothing is sent
and the step says so once: a CLI run on a laptop still works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

RUN_KEY_TAG = "llmops.run_key"


class Tracker:
    def __init__(self, uri: str | None, experiment: str, run_key: str, run_name: str,
                 tags: Mapping[str, str] | None = None, log=print) -> None:
        self.enabled, self.uri = bool(uri), uri
        self.run_id: str | None = None
        if not self.enabled:
            log("tracking: no MLflow URI (MLFLOW_TRACKING_URI / --mlflow-uri): metrics go to this log only")
            return
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        existing = self.client.search_runs([experiment_id], f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1)
        if existing:
            self.run_id = existing[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            log(f"tracking: resuming MLflow run {self.run_id} ({uri}, experiment {experiment})")
        else:
            run = self.client.create_run(experiment_id, run_name=run_name, tags={RUN_KEY_TAG: run_key, **(tags or {})})
            self.run_id = run.info.run_id
            log(f"tracking: MLflow run {self.run_id} ({uri}, experiment {experiment})")

    @classmethod
    def from_env(cls, experiment: str, run_key: str, run_name: str, tags: Mapping[str, str] | None = None,
                 uri: str | None = None, log=print) -> Tracker:
        return cls(uri or os.environ.get("MLFLOW_TRACKING_URI"), experiment, run_key, run_name, tags, log)

    def params(self, values: Mapping[str, Any]) -> None:
        if self.enabled:
            from mlflow.entities import Param

            logged = self.client.get_run(self.run_id).data.params
            fresh = [Param(k, str(v)) for k, v in values.items() if k not in logged]
            if fresh:
                self.client.log_batch(self.run_id, params=fresh)

    def metrics(self, values: Mapping[str, float], step: int) -> None:
        if self.enabled:
            from mlflow.entities import Metric

            stamp = _now_ms()
            self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in values.items()])

    def tags(self, values: Mapping[str, str]) -> None:
        if self.enabled:
            for key, value in values.items():
                self.client.set_tag(self.run_id, key, str(value))

    def finish(self, ok: bool) -> None:
        if self.enabled:
            self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def find_run_tags(uri: str, experiment: str, run_key: str) -> dict[str, str]:
    """The tags of the run a step opened under run_key (plus its id as `mlflow_run_id`); KeyError if none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=1) \
        if found else []
    if not runs:
        raise KeyError(f"no MLflow run tagged {RUN_KEY_TAG}={run_key} in experiment {experiment} at {uri}")
    return {**runs[0].data.tags, "mlflow_run_id": runs[0].info.run_id}
