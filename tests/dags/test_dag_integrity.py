"""Every DAG imports, is wired the platform's way, and does no heavy work at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from tasks.evaluation.config import CHECKS

REPO = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))
# Importing any of these at parse time would cost the dag-processor seconds per file on every parse.
HEAVY_MODULES = ("torch", "mlflow", "transformers", "sentence_transformers", "megatron", "great_expectations",
                 "tritonclient", "pandas", "lakefs")


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(REPO / "dags"))


def test_there_are_dags_to_check():
    assert DAG_FILES, "no DAG files found under dags/"


def test_every_dag_imports(dagbag: DagBag):
    assert dagbag.import_errors == {}
    assert {Path(dag.fileloc).name for dag in dagbag.dags.values()} == {p.name for p in DAG_FILES}


# Tasks a retry cannot help: a bad conf will not get better; a deploy step that failed has already rolled back; a
# monitoring check that found a breach would find it again.
NO_RETRY = {"check_conf", "build_and_deploy.stage", "build_and_deploy.gates", "build_and_deploy.promote",
            *(f"monitor_llm.check_{area}" for area in CHECKS)}


def test_every_dag_has_tags_owner_and_retries(dagbag: DagBag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id}: owner not set"
            if not {task.task_id, f"{dag_id}.{task.task_id}"} & NO_RETRY:
                assert task.retries >= 1, f"{dag_id}.{task.task_id}: retries={task.retries}"


def test_every_dag_checks_its_conf_first(dagbag: DagBag):
    for dag_id, dag in dagbag.dags.items():
        assert "check_conf" in dag.task_ids, f"{dag_id}: no check_conf task"
        assert [t.task_id for t in dag.roots] == ["check_conf"], f"{dag_id}: check_conf must be the only root"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_parse_time(dag_file: Path):
    probe = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]);"
        f"print(json.dumps(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe, str(dag_file)], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_every_dag_survives_serialisation(dagbag: DagBag):
    """The scheduler and API only see the serialised DAG; what does not round-trip never runs."""
    from airflow.serialization.serialized_objects import DagSerialization

    for dag_id, dag in dagbag.dags.items():
        restored = DagSerialization.from_dict(DagSerialization.to_dict(dag))
        assert restored.task_ids == dag.task_ids, dag_id
