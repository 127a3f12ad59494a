"""pretrain: a Llama-style GPT pre-trained with megatron-core on the corpus curate_corpus published.

Triggered by the curated-corpus Asset (its event names the lakeFS commit), from the UI or the REST API
(`data_commit` Param, else the head of `main`). `validate` checks every Param and the dataset at that commit before
anything trains; `train` runs through the launcher (a local subprocess / torchrun here, a GPU pod or an indexed Job
in production) and resumes from the newest committed checkpoint by itself when Airflow retries it; `publish` emits
the checkpoint Asset with its URI, data commit and MLflow run id.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from plugins.conf_guard import check_conf
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.step_operator import StepOperator

CURATED_CORPUS = Asset("lakefs://corpus/main/curated")
PRETRAINED = Asset("llmops://checkpoints/pretrain")


@dag(
    dag_id="pretrain",
    schedule=[CURATED_CORPUS],
    catchup=False,
    tags=["training", "megatron"],
    default_args=DEFAULT_ARGS,
    max_active_runs=1,
    params={
        "repo": Param("corpus", type="string", pattern="^[a-z0-9][a-z0-9-]{2,62}$",
                      description="lakeFS repository curate_corpus published to"),
        "data_commit": Param(None, type=["null", "string"],
                             description="lakeFS commit id or ref of the tokenized corpus; empty = the triggering "
                                         "Asset event's commit, else the head of main"),
        "preset": Param("tiny", enum=["tiny", "125m", "1b"], description="model size"),
        "steps": Param(300, type="integer", minimum=1, description="optimiser steps in all (a resume continues)"),
        "micro_batch_size": Param(8, type="integer", minimum=1),
        "global_batch_size": Param(16, type="integer", minimum=1,
                                   description="sequences per step; a multiple of micro_batch_size x data_parallel"),
        "lr": Param(3e-3, type="number", exclusiveMinimum=0, description="peak learning rate"),
        "min_lr": Param(3e-4, type="number", minimum=0, description="cosine decay floor"),
        "warmup_steps": Param(10, type="integer", minimum=0),
        "tensor_parallel": Param(1, type="integer", minimum=1),
        "pipeline_parallel": Param(1, type="integer", minimum=1),
        "data_parallel": Param(1, type="integer", minimum=1),
        "nodes": Param(1, type="integer", minimum=1, description="machines (pods) the ranks are spread over"),
        "gpus_per_node": Param(0, type="integer", minimum=0, description="0 = CPU (gloo); else NCCL on GPUs"),
        "launcher": Param("platform", enum=["platform", "local", "kubernetes"],
                          description="platform = the launcher include/platform.yaml (or LLMOPS_LAUNCHER) names"),
        "checkpoint_interval": Param(100, type="integer", minimum=1, description="steps between checkpoints"),
        "checkpoint_keep": Param(2, type="integer", minimum=1, description="committed checkpoints kept"),
        "resume_policy": Param("auto", enum=["auto", "restart"],
                               description="auto: resume the newest checkpoint of this experiment; restart: archive "
                                           "checkpoints of other runs and start over"),
        "eval_interval": Param(100, type="integer", minimum=1, description="steps between validation losses"),
        "seed": Param(1234, type="integer", minimum=0),
        "experiment": Param("pretrain", type="string", pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                            description="MLflow experiment and checkpoint folder"),
    },
    doc_md=__doc__,
)
def pretrain():
    @task(multiple_outputs=True)
    def validate(params=None, dag_run=None, triggering_asset_events=None) -> dict:
        """Every rule checked before training: a bad Param fails here, named, with nothing started."""
        from plugins.connections import lakefs_endpoint
        from plugins.launchers.base import artifact_root
        from tasks.training import pretrain as trainer

        repo, commit = params["repo"], params["data_commit"]
        events = (triggering_asset_events or {}).get(CURATED_CORPUS) or []
        if not commit and events:
            repo, commit = events[-1].extra["repo"], events[-1].extra["commit_id"]
        launcher = None if params["launcher"] == "platform" else params["launcher"]
        planned = trainer.launch_plan(params, repo=repo, data_commit=commit or "main",
                                      artifact_root=artifact_root(launcher),
                                      run_key=f"{dag_run.dag_id}/{dag_run.run_id}", endpoint=lakefs_endpoint())
        print(f"plan: {planned}")
        return planned

    plan = validate()
    train = StepOperator(
        task_id="train", module="tasks.training.pretrain", args=plan["args"], step_resources=plan["resources"],
        launcher="{{ '' if params.launcher == 'platform' else params.launcher }}", lakefs=True, mlflow=True,
    )

    @task(outlets=[PRETRAINED])
    def publish(plan: dict, params=None, dag_run=None, outlet_events=None) -> dict:
        """The finished checkpoint, read back from the MLflow run the training step recorded it in."""
        from plugins.connections import MLFLOW, http_url
        from tasks.common.tracking import find_run_tags

        tags = find_run_tags(http_url(MLFLOW), params["experiment"], f"{dag_run.dag_id}/{dag_run.run_id}")
        extra = {"checkpoint_uri": tags["checkpoint_uri"], "data_commit": plan["data_commit"],
                 "mlflow_run_id": tags["mlflow_run_id"], "step": int(tags["final_step"]),
                 "loss": float(tags["final_loss"]), "preset": params["preset"]}
        outlet_events[PRETRAINED].extra = extra
        return extra

    check_conf() >> plan
    train >> publish(plan["plan"])


pretrain()
