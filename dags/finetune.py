"""finetune: LoRA adapters (or full fine-tuning) of a pre-trained checkpoint on instructions, exported and registered.

Triggered by the pre-trained checkpoint Asset, from the UI or the REST API (`base` Param: a checkpoint path or a
registered version `models:/<name>/<version or alias>`; empty = the triggering event's checkpoint, else the newest
of the `pretrain` experiment). `validate` checks every Param, the base and the SFT set at its lakeFS commit (curation
stages + a Great Expectations gate) before anything trains; `train` fine-tunes through the launcher, resuming on a
retry, exports the base (Hugging Face Llama), the adapter (PEFT) and the merged model, and registers them in MLflow
with their lineage (alias `candidate`); `publish` emits the Asset deployment listens to.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.assets import FINETUNE_REQUESTED, FINETUNED, PRETRAINED, newest_extra
from plugins.conf_guard import check_conf
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.training import launcher_choice, recorded_tags, train_step, training_params

LORA_TARGETS = ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]


@dag(
    dag_id="finetune",
    schedule=PRETRAINED | FINETUNE_REQUESTED,  # a new base, or monitor_llm saw answers degrade
    catchup=False,
    tags=["training", "lora"],
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    params={
        "base": Param(None, type=["null", "string"],
                      description="checkpoint path or models:/<name>/<version or alias>; empty = the triggering "
                                  "Asset's checkpoint, else the newest pre-training checkpoint"),
        "repo": Param("corpus", type="string", pattern="^[a-z0-9][a-z0-9-]{2,62}$",
                      description="lakeFS repository holding sft/*.jsonl"),
        "sft_commit": Param(None, type=["null", "string"], description="commit id or ref of the SFT set; empty = main"),
        "method": Param("lora", enum=["lora", "full"]),
        "lora_rank": Param(8, type="integer", minimum=1),
        "lora_alpha": Param(16.0, type="number", exclusiveMinimum=0),
        "lora_dropout": Param(0.0, type="number", minimum=0, exclusiveMaximum=1),
        "lora_targets": Param(LORA_TARGETS, type="array", items={"type": "string", "enum": LORA_TARGETS}, minItems=1,
                              description="megatron layers that get adapters"),
        "merge_after": Param(True, type="boolean", description="also export base + adapter merged"),
        **training_params(experiment="finetune", steps=60, lr=1e-3, checkpoint_interval=30, eval_interval=30),
    },
    doc_md=__doc__,
)
def finetune():
    @task(multiple_outputs=True)
    def validate(params=None, dag_run=None, triggering_asset_events=None) -> dict:
        """Every rule checked before training: a bad Param, base or SFT set fails here, named."""
        import os

        from plugins.connections import MLFLOW, http_url, lakefs_endpoint
        from plugins.launchers.base import artifact_root
        from tasks.training import finetune as tuner

        root = artifact_root(launcher_choice(params))
        event = newest_extra(triggering_asset_events, PRETRAINED)
        base = params["base"] or (event["checkpoint_uri"] if event else f"{root}/checkpoints/pretrain")
        os.environ.setdefault("MLFLOW_TRACKING_URI", http_url(MLFLOW))  # to resolve models:/ bases
        planned = tuner.launch_plan(params, base=base, repo=params["repo"], sft_commit=params["sft_commit"] or "main",
                                    artifact_root=root, run_key=f"{dag_run.dag_id}/{dag_run.run_id}",
                                    endpoint=lakefs_endpoint())
        print(f"plan: {planned}")
        return planned

    plan = validate()
    train = train_step("tasks.training.finetune", plan)

    @task(outlets=[FINETUNED])
    def publish(plan: dict, params=None, dag_run=None, outlet_events=None) -> dict:
        """The registered versions, read back from the MLflow run the step recorded them in."""
        import json

        tags = recorded_tags(params, dag_run)
        registered = json.loads(tags["registered"])
        model = registered.get("merged") or registered.get("full") or registered.get("base")
        extra = {"model_name": model["name"], "model_version": model["version"], "registered": registered,
                 "sft_commit": plan["sft_commit"], "pretrain_commit": plan["pretrain_commit"],
                 "mlflow_run_id": tags["mlflow_run_id"], "loss": float(tags["final_loss"])}
        outlet_events[FINETUNED].extra = extra
        return extra

    check_conf() >> plan
    train >> publish(plan["plan"])


finetune()
