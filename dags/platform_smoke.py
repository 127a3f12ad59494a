"""platform_smoke: every component of the stack answers a real request."""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.conf_guard import check_conf
from plugins.connections import MLFLOW, TRITON, http_url, lakefs_endpoint, postgres_dsn
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.launchers.step import Resources
from plugins.step_operator import StepOperator
from tasks.common import service_checks


@dag(
    dag_id="platform_smoke",
    schedule=None,
    catchup=False,
    tags=["platform", "smoke"],
    default_args=DEFAULT_ARGS,
    params={"mlflow_experiment": Param("platform_smoke", type="string", minLength=1, description="MLflow experiment")},
    doc_md=__doc__,
)
def platform_smoke():
    @task
    def pgvector_query() -> float:
        return service_checks.check_pgvector(postgres_dsn())

    @task
    def triton_ready() -> str:
        return service_checks.check_triton(http_url(TRITON))["version"]

    @task
    def mlflow_run(params: dict | None = None) -> str:
        return service_checks.log_mlflow_smoke_run(http_url(MLFLOW), params["mlflow_experiment"])

    @task
    def lakefs_publish(dag_run=None) -> str:
        return service_checks.check_lakefs(lakefs_endpoint(), dag_run.dag_id, dag_run.run_id)

    launcher_step = StepOperator(
        task_id="launcher_step",
        module="tasks.common.distributed_probe",
        step_resources=Resources(cpu="1", memory="1Gi", processes_per_node=2),
    )

    check_conf() >> [pgvector_query(), lakefs_publish(), triton_ready(), mlflow_run(), launcher_step]


platform_smoke()
