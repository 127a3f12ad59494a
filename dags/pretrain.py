"""pretrain: a Llama-style GPT pre-trained with megatron-core on the corpus curate_corpus published.

Triggered by the curated-corpus Asset (its event names the lakeFS commit), from the UI or the REST API
(`data_commit` Param, else the head of `main`). `validate` checks every Param and the dataset at that commit before
anything trains; `train` runs through the launcher (a local subprocess / torchrun here, a GPU pod or an indexed Job
in production) and resumes from the newest committed checkpoint by itself when Airflow retries it; `publish` emits
the checkpoint Asset with its URI, data commit and MLflow run id.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.assets import CURATED_CORPUS, PRETRAINED
from plugins.conf_guard import check_conf
from plugins.dag_defaults import DEFAULT_ARGS
from plugins.training import launcher_choice, recorded_tags, train_step, training_params


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
        **training_params(experiment="pretrain", steps=300, lr=3e-3),
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
            newest = max(events, key=lambda event: event.timestamp)
            repo, commit = newest.extra["repo"], newest.extra["commit_id"]
        planned = trainer.launch_plan(params, repo=repo, data_commit=commit or "main",
                                      artifact_root=artifact_root(launcher_choice(params)),
                                      run_key=f"{dag_run.dag_id}/{dag_run.run_id}", endpoint=lakefs_endpoint())
        print(f"plan: {planned}")
        return planned

    plan = validate()
    train = train_step("tasks.training.pretrain", plan)

    @task(outlets=[PRETRAINED])
    def publish(plan: dict, params=None, dag_run=None, outlet_events=None) -> dict:
        """The finished checkpoint, read back from the MLflow run the training step recorded it in."""
        tags = recorded_tags(params, dag_run)
        extra = {"checkpoint_uri": tags["checkpoint_uri"], "data_commit": plan["data_commit"],
                 "mlflow_run_id": tags["mlflow_run_id"], "step": int(tags["final_step"]),
                 "loss": float(tags["final_loss"]), "preset": params["preset"]}
        outlet_events[PRETRAINED].extra = extra
        return extra

    check_conf() >> plan
    train >> publish(plan["plan"])


pretrain()
