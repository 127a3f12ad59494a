"""What every training DAG shares, declared once: its Params (parallel layout, launcher, batch, schedule,
checkpoints; each also the training CLI's flag `--<name with dashes>`), the train step, and reading back what the
step recorded in its MLflow run."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param

from plugins.step_operator import StepOperator


def training_params(*, experiment: str, steps: int, lr: float, micro_batch_size: int = 8,
                    global_batch_size: int = 16, checkpoint_interval: int = 100, eval_interval: int = 100
                    ) -> dict[str, Param]:
    return {
        "steps": Param(steps, type="integer", minimum=1, description="optimiser steps in all (a resume continues)"),
        "micro_batch_size": Param(micro_batch_size, type="integer", minimum=1),
        "global_batch_size": Param(global_batch_size, type="integer", minimum=1,
                                   description="sequences per step; a multiple of micro_batch_size x data_parallel"),
        "lr": Param(lr, type="number", exclusiveMinimum=0, description="peak learning rate"),
        "min_lr": Param(lr / 10, type="number", minimum=0, description="cosine decay floor"),
        "warmup_steps": Param(10, type="integer", minimum=0),
        "tensor_parallel": Param(1, type="integer", minimum=1),
        "pipeline_parallel": Param(1, type="integer", minimum=1),
        "data_parallel": Param(1, type="integer", minimum=1),
        "nodes": Param(1, type="integer", minimum=1, description="machines (pods) the ranks are spread over"),
        "gpus_per_node": Param(0, type="integer", minimum=0, description="0 = CPU (gloo); else NCCL on GPUs"),
        "launcher": Param("platform", enum=["platform", "local", "kubernetes"],
                          description="platform = the launcher include/platform.yaml (or LLMOPS_LAUNCHER) names"),
        "checkpoint_interval": Param(checkpoint_interval, type="integer", minimum=1,
                                     description="steps between checkpoints"),
        "checkpoint_keep": Param(2, type="integer", minimum=1, description="committed checkpoints kept"),
        "resume_policy": Param("auto", enum=["auto", "restart"],
                               description="auto: resume the newest checkpoint of this experiment; restart: archive "
                                           "checkpoints of other runs and start over"),
        "eval_interval": Param(eval_interval, type="integer", minimum=1, description="steps between validation losses"),
        "seed": Param(1234, type="integer", minimum=0),
        "experiment": Param(experiment, type="string", pattern="^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                            description="MLflow experiment and checkpoint folder"),
    }


def launcher_choice(params: dict[str, Any]) -> str | None:
    """The launcher Param as make_launcher / artifact_root take it: None for the platform's own."""
    return None if params["launcher"] == "platform" else params["launcher"]


def train_step(module: str, plan: Any) -> StepOperator:
    """The heavy step: the validated command line and resources come from the `validate` task's XCom."""
    return StepOperator(
        task_id="train", module=module, args=plan["args"], step_resources=plan["resources"],
        launcher="{{ '' if params.launcher == 'platform' else params.launcher }}", lakefs=True, mlflow=True,
    )


def recorded_tags(params: dict[str, Any], dag_run: Any) -> dict[str, str]:
    """The tags of the MLflow run this DAG run's train step opened (its run key is dag id/run id)."""
    from plugins.connections import MLFLOW, http_url
    from tasks.common.tracking import find_run_tags

    return find_run_tags(http_url(MLFLOW), params["experiment"], f"{dag_run.dag_id}/{dag_run.run_id}")
