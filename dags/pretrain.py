"""pretrain: a Llama-style GPT pre-trained with megatron-core on the corpus curate_corpus published.

Triggered by the curated-corpus Asset (its event names the lakeFS commit), from the UI or the REST API
(`data_commit` Param, else the head of `main`). `validate` checks every Param and the dataset at that commit before
anything trains; `train` runs through the launcher (a local subprocess / torchrun here, a GPU pod or an indexed Job
in production) and resumes from the newest committed checkpoint by itself when Airflow retries it; `publish` emits
the checkpoint Asset with its URI, data commit and MLflow run id.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from plugins.assets import CURATED_CORPUS, PRETRAINED, curated_input, curated_input_params
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
        **curated_input_params("of the tokenized corpus"),
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

        repo, commit = curated_input(params, triggering_asset_events)
        planned = trainer.launch_plan(params, repo=repo, data_commit=commit,
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
