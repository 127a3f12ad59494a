"""build_and_deploy: a registered model version (+ LoRA adapters) -> Triton candidate -> gates -> promote/roll back.

Triggered by the fine-tuned-model Asset, the UI or the REST API. `validate` resolves the versions in MLflow, checks
the adapters were trained on that base and Triton is up; `build` writes the version through the launcher (a retry
reuses it); `stage` loads it as `<served_name>-candidate` (alias `challenger`); `gates` compares its greedy output
with the export's reference and measures TTFT / time per token / tokens/s at concurrency 1, 4, 8; `approve` waits
for a human when `approval` is on; `promote` switches the served name without a gap (alias `champion`). A failure
or rejection unloads the candidate, the serving version untouched; all of it lands in deployment_history.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.assets import DEPLOYED, FINETUNED, newest_extra
from plugins.conf_guard import check_conf
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.launchers.step import Resources
from plugins.serving import ApprovalGate, record, roll_back, triton_target
from plugins.step_operator import StepOperator


@dag(
    dag_id="build_and_deploy",
    schedule=[FINETUNED],
    catchup=False,
    tags=["serving", "triton"],
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    params={
        "model": Param(None, type=["null", "string"], pattern="^models:/[^/]+/[^/]+$",
                       description="models:/<name>/<version or alias>; empty = the triggering fine-tune's base"),
        "adapters": Param(None, type=["null", "array"], items={"type": "string", "pattern": "^models:/[^/]+/[^/]+$"},
                          description="LoRA adapters to serve next to the base; empty = the triggering "
                                      "fine-tune's adapter (none when triggered by hand without `model`)"),
        "served_name": Param("llm", type="string", pattern="^[a-z][a-z0-9_-]{1,40}$", description="name clients call"),
        "target": Param("python", enum=["python", "tensorrt_llm"], description="tensorrt_llm: engine-builder pod"),
        "quantization": Param("none", enum=["none", "int8-dynamic"], description="int8-dynamic: CPU int8 linears"),
        **{name: Param(default, type="number", minimum=0, description=f"latency gate at concurrency 8: {about}")
           for name, default, about in (("max_ttft_ms", 5000, "TTFT p50"), ("max_tpot_ms", 1000, "time per token p50"),
                                        ("min_tokens_per_s", 5, "total tokens/s"))},
        "approval": Param(False, type="boolean", description="wait for a human to approve in the Airflow UI"),
        "retention": Param(3, type="integer", minimum=1, description="repository versions kept besides serving"),
    },
    doc_md=__doc__,
)
def build_and_deploy():
    @task(multiple_outputs=True)
    def validate(params=None, dag_run=None, triggering_asset_events=None) -> dict:
        """The versions exist, the adapters belong to the base, Triton is up: else a named error, nothing built."""
        from plugins.connections import MLFLOW, http_url
        from tasks.serving.build import plan

        event = newest_extra(triggering_asset_events, FINETUNED)
        registered = (event or {}).get("registered") or {}
        model = params["model"] or (f"models:/{registered['base']['name']}/{registered['base']['version']}"
                                    if registered.get("base") else None)
        if model is None:
            raise ValueError("model: empty, and this run was not triggered by a fine-tuned model; "
                             "give models:/<name>/<version or alias>")
        adapters = params["adapters"] if params["adapters"] is not None else (
            [f"models:/{registered['adapter']['name']}/{registered['adapter']['version']}"]
            if registered.get("adapter") and not params["model"] else [])
        if params["target"] != "python":
            raise ValueError("target tensorrt_llm: built by the engine-builder pod (python -m tasks.serving.trtllm "
                             "build) for a GPU Triton; this platform's Triton serves the python target")
        base, adapter_versions = plan(http_url(MLFLOW), model, adapters)
        target = triton_target(params["served_name"])
        if not target.control.server_ready():
            raise RuntimeError(f"Triton at {target.control.base} is not ready; nothing was built or changed")
        run_key = f"{dag_run.dag_id}/{dag_run.run_id}"
        planned = {"model": model, "served_name": params["served_name"], "run_key": run_key,
                   "registered_model": base.name, "registered_version": base.version,
                   "adapters": {a.name: a.version for a in adapter_versions},
                   "serving_version": target.serving_version(),
                   "build_args": ["--model", model, "--repository", str(target.repository.root), "--served-name",
                                  params["served_name"], "--quantization", params["quantization"], "--retention",
                                  str(params["retention"]), "--run-key", run_key,
                                  *[arg for uri in adapters for arg in ("--adapter", uri)]]}
        print(f"plan: {planned}")
        return planned

    plan = validate()
    build = StepOperator(task_id="build", module="tasks.serving.build", args=plan["build_args"],
                         step_resources=Resources(cpu="2", memory="4Gi"), mlflow=True)

    @task(retries=0)  # a failed stage, gate or promotion has rolled back: the next step is a new run
    def stage(plan: dict, dag_run=None) -> dict:
        """Load the built version as the candidate (alias `challenger`); a candidate that cannot load goes."""
        from plugins.connections import MLFLOW, http_url
        from tasks.common import registry
        from tasks.serving.build import find_built
        from tasks.serving.deploy import stage_candidate

        target = triton_target(plan["served_name"])
        version = find_built(target.repository, plan["served_name"], plan["run_key"])
        if version is None:
            raise RuntimeError(f"build left no version of {plan['served_name']} for {plan['run_key']}")
        try:
            stage_candidate(target, version)
        except Exception as error:
            roll_back({**plan, "version": version}, f"stage: {error}", dag_run)
            raise
        registry.move_alias(http_url(MLFLOW), plan["registered_model"], "challenger", plan["registered_version"])
        return {"version": version}

    @task(retries=0)
    def gates(plan: dict, staged: dict, params=None, dag_run=None) -> dict:
        """Smoke test (greedy output == the export's reference) and latency gate on the candidate."""
        from tasks.serving.deploy import latency_gate, smoke_test

        target, version = triton_target(plan["served_name"]), staged["version"]
        limits = {k: params[k] for k in ("max_ttft_ms", "max_tpot_ms", "min_tokens_per_s")}
        try:
            return {**smoke_test(target, version), **latency_gate(target, limits)}
        except Exception as error:
            roll_back({**plan, **staged}, f"gates: {error}", dag_run)
            raise

    @task(outlets=[DEPLOYED], retries=0)
    def promote(plan: dict, staged: dict, figures: dict, dag_run=None, outlet_events=None) -> dict:
        """The served name now answers from the new version; `champion` follows; history records who and why."""
        from plugins.connections import MLFLOW, http_url
        from tasks.common import registry
        from tasks.serving.deploy import promote as promote_version

        target = triton_target(plan["served_name"])
        try:
            previous = promote_version(target, staged["version"])
        except Exception as error:
            roll_back({**plan, **staged}, f"promote: {error}", dag_run)
            raise
        uri = http_url(MLFLOW)
        registry.move_alias(uri, plan["registered_model"], "champion", plan["registered_version"])
        registry.move_alias(uri, plan["registered_model"], "challenger", None)
        record({**plan, **staged}, "promoted", "gates passed", dag_run, from_version=previous, gates=figures)
        extra = {"served_name": plan["served_name"], "version": staged["version"], "previous_version": previous,
                 "registered_model": plan["registered_model"], "registered_version": plan["registered_version"],
                 "adapters": plan["adapters"], "gates": figures}
        outlet_events[DEPLOYED].extra = extra
        return extra

    staged = stage(plan)
    figures = gates(plan, staged)
    approve = ApprovalGate(task_id="approve", subject="Promote {{ params.served_name }}?", body="{{ ti.xcom_pull('gates') }}")
    check_conf() >> plan >> build >> staged
    figures >> approve >> promote(plan, staged, figures)


build_and_deploy()
