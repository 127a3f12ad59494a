"""Params every training DAG shares (parallel layout, launcher, batch, schedule, checkpoints), declared once.

Each name is also the training CLI's flag (`--<name with dashes>`), so a DAG hands its Params through unchanged.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param


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


LAUNCHER_TEMPLATE = "{{ '' if params.launcher == 'platform' else params.launcher }}"
