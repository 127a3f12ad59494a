"""monitor_llm: scheduled checks of the served model over the request log and Triton's metrics.

Every hour (or from the UI / REST API), `evaluate` takes the window ending at the run's time (`window_end` Param
to look at another) against the reference window before it: input drift (query embeddings, a two-sample test
with a p-value; question length and language PSI), output drift (answer length, refusal, toxicity and citation
rates), answer quality (groundedness, relevance, toxicity), latency / throughput / errors, and cost per user, model
and prompt arm (A/B compared); and, offline, the served model against the registry's candidate (held-out perplexity
and question-set accuracy, side by side). It writes an HTML report and records every figure in `monitor_runs`. Each area then
has a `check_*` task that fails, named, with the numbers when its thresholds (include/monitoring/) are breached;
`notify` posts the breaches to the webhook; `request_reindex` / `request_finetune` emit the Assets that start
reindex_rag / finetune when a breached check is mapped to them. Too few requests: "not enough data", nothing fails.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.assets import FINETUNE_REQUESTED, REINDEX_REQUESTED
from plugins.conf_guard import check_conf
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.launchers.step import Resources
from plugins.step_operator import StepOperator
from tasks.evaluation.config import CHECKS


@dag(
    dag_id="monitor_llm",
    schedule="@hourly",
    catchup=False,
    tags=["monitoring", "drift", "quality"],
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    params={
        "window_end": Param(None, type=["null", "string"], format="date-time",
                            description="end of the window to check (ISO 8601); empty = this run's time"),
        "webhook": Param(None, type=["null", "string"], pattern="^https?://",
                         description="where breaches are posted; empty = include/monitoring/monitoring.yaml's"),
        "served_name": Param("llm", type="string", pattern="^[a-z][a-z0-9_-]{1,40}$", description="Triton model"),
        "candidate": Param(None, type=["null", "string"], pattern="^models:/[^/]+/[^/]+$",
                           description="registered model to evaluate offline against the served one; empty = the "
                                       "served model's `candidate` alias"),
        "min_window": Param(None, type=["null", "integer"], minimum=2,
                            description="records per window the drift tests need; empty = thresholds.yaml's (400: "
                                        "smaller windows raise more false alarms, see docs/benchmarks.md)"),
    },
    doc_md=__doc__,
)
def monitor_llm():
    @task(multiple_outputs=True)
    def validate(params=None, dag_run=None) -> dict:
        """The monitoring config and thresholds parse and hold their rules; the window is fixed here."""
        from plugins.connections import triton_metrics
        from plugins.launchers.base import artifact_root
        from plugins.serving import model_repository_root
        from tasks.evaluation import config

        cfg = config.load()
        window_end = params["window_end"] or dag_run.run_after.isoformat()
        run_key = f"{dag_run.dag_id}/{dag_run.run_id}"
        print(f"window of {cfg.window_hours} h ending {window_end}; reference {cfg.reference_hours} h before it")
        return {"run_key": run_key, "webhook": params["webhook"] or cfg.webhook, "actions": cfg.actions,
                "args": ["evaluate", "--window-end", window_end, "--run-key", run_key, "--reports",
                         f"{artifact_root()}/reports/monitor_llm", "--metrics-url", triton_metrics(),
                         "--served-name", params["served_name"], "--repository", str(model_repository_root()),
                         *(["--candidate", params["candidate"]] if params["candidate"] else []),
                         *(["--min-window", str(params["min_window"])] if params["min_window"] else [])]}

    plan = validate()
    evaluate = StepOperator(task_id="evaluate", module="tasks.evaluation.steps", args=plan["args"],
                            step_resources=Resources(cpu="2", memory="4Gi"), postgres=True, lakefs=True, mlflow=True)

    @task
    def outcome(run_key: str) -> dict:
        """What evaluate recorded for this run: status, breaches, report path."""
        from plugins.connections import postgres_dsn
        from tasks.common import platform_db

        with platform_db.connect(postgres_dsn()) as conn:
            figures, breaches, report = conn.execute("SELECT figures, breaches, report FROM monitor_runs "
                                                     "WHERE run_key = %s", (run_key,)).fetchone()
        print(f"{figures['status']}; report: {report}")
        return {"status": figures["status"], "breaches": breaches, "report": report}

    result = outcome(plan["run_key"])
    check_conf() >> plan >> evaluate >> result

    def make_check(area: str):
        @task(task_id=f"check_{area}", retries=0)  # a breach is a finding, not a transient error
        def check(result: dict) -> str:
            if area in result["breaches"]:
                raise RuntimeError(f"{area} breached: {result['breaches'][area]} (report: {result['report']})")
            return result["status"]

        return check(result)

    for area in CHECKS:  # leaves: a breached check fails the run
        make_check(area)

    @task
    def notify(result: dict, webhook: str | None) -> str:
        """POST the breaches (JSON) to the webhook; nothing is sent for a clean run."""
        from tasks.evaluation.actions import notify as post

        return post(webhook, result)

    def make_request(pipeline: str, asset):
        @task(task_id=f"request_{pipeline}", outlets=[asset])
        def request(result: dict, actions: dict, outlet_events=None) -> dict:
            """Emits the Asset that starts the pipeline when a check mapped to it breached; skipped otherwise."""
            from airflow.exceptions import AirflowSkipException

            why = {area: text for area, text in result["breaches"].items() if actions.get(area) == pipeline}
            if not why:
                raise AirflowSkipException(f"no breached check asks for {pipeline}")
            outlet_events[asset].extra = {"reasons": why, "report": result["report"]}
            return why

        return request(result, plan["actions"])

    notify(result, plan["webhook"])
    make_request("reindex", REINDEX_REQUESTED)
    make_request("finetune", FINETUNE_REQUESTED)


monitor_llm()
