"""What every training CLI shares (pretrain, finetune): its common flags, the config they make, the MLflow run,
and the resume-or-start-then-train sequence with its checkpoint rules. Written once so both behave the same."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.training.checkpoint import CheckpointStore, CheckpointUnusable
from tasks.training.config import (
    BatchConfig,
    CheckpointConfig,
    ConfigError,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
)

H100_BF16_PEAK_FLOPS = 989e12  # dense bf16 Tensor Core peak of an H100 SXM


def say(line: str) -> None:
    """One write per line, so ranks sharing the launcher's pipe never interleave inside a line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def add_training_arguments(p: argparse.ArgumentParser, experiment: str, steps: int, lr: float) -> None:
    par = p.add_argument_group("parallelism (world size must be TP x PP x DP)")
    par.add_argument("--tensor-parallel", type=int, default=1)
    par.add_argument("--pipeline-parallel", type=int, default=1)
    par.add_argument("--data-parallel", type=int, default=1)
    opt = p.add_argument_group("optimiser and schedule")
    opt.add_argument("--steps", type=int, default=steps)
    opt.add_argument("--micro-batch-size", type=int, default=8)
    opt.add_argument("--global-batch-size", type=int, default=16)
    opt.add_argument("--lr", type=float, default=lr)
    opt.add_argument("--min-lr", type=float, default=lr / 10)
    opt.add_argument("--warmup-steps", type=int, default=OptimConfig.warmup_steps)
    opt.add_argument("--weight-decay", type=float, default=OptimConfig.weight_decay)
    opt.add_argument("--grad-clip", type=float, default=OptimConfig.grad_clip)
    opt.add_argument("--seed", type=int, default=1234)
    opt.add_argument("--eval-interval", type=int, default=50)
    opt.add_argument("--eval-batches", type=int, default=4)
    ck = p.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint-dir", required=True, help="this training's checkpoint folder (local or PVC)")
    ck.add_argument("--checkpoint-interval", type=int, default=50)
    ck.add_argument("--checkpoint-keep", type=int, default=2)
    ck.add_argument("--resume-policy", default="auto", help="auto (resume latest) | restart (archive, start over)")
    tr = p.add_argument_group("tracking")
    tr.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    tr.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default: {experiment})")
    tr.add_argument("--run-key", default=None,
                    help="identifies this training across retries (the DAG passes dag id/run id); with "
                         "--resume-policy restart, checkpoints of other run keys are archived (default: fresh)")
    tr.add_argument("--peak-tflops", type=float, default=None,
                    help="per-device peak for MFU (default: 989 on an H100, none on CPU)")


def train_config(args: argparse.Namespace, model: ModelConfig) -> TrainConfig:
    return TrainConfig(
        model=model,
        parallel=ParallelConfig(args.tensor_parallel, args.pipeline_parallel, args.data_parallel),
        optim=OptimConfig(lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup_steps,
                          weight_decay=args.weight_decay, grad_clip=args.grad_clip),
        batch=BatchConfig(steps=args.steps, micro_batch_size=args.micro_batch_size,
                          global_batch_size=args.global_batch_size, seed=args.seed,
                          eval_interval=args.eval_interval, eval_batches=args.eval_batches),
        checkpoint=CheckpointConfig(str(args.checkpoint_dir), args.checkpoint_interval, args.checkpoint_keep,
                                    args.resume_policy),
    )


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("LLMOPS_CODE_VERSION", "unknown")


def run_key(args: argparse.Namespace) -> str:
    return args.run_key or f"cli-{uuid.uuid4().hex[:12]}"  # only rank 0 uses it


def peak_flops(args: argparse.Namespace) -> float | None:
    import torch

    if args.peak_tflops:
        return args.peak_tflops * 1e12
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    return H100_BF16_PEAK_FLOPS if "H100" in name else None


def open_tracker(args: argparse.Namespace, key: str, run_name: str, cfg: TrainConfig, tags: dict[str, str],
                 params: dict[str, Any]):
    """Rank 0's MLflow run (found again by the run key on a retry), with every setting as a param."""
    from tasks.common.tracking import Tracker

    tracker = Tracker.from_env(args.experiment, key, run_name=run_name, uri=args.mlflow_uri, log=say,
                               tags={"code_version": code_version(), **tags})
    tracker.params({**params, **{f"{group}.{k}": v for group, values in cfg.as_dict().items()
                                 for k, v in values.items()}})
    return tracker


def resume_then_train(trainer, store: CheckpointStore, key: str, name: str) -> tuple[Any, float]:
    """Archive on restart (rank 0), resume the newest usable checkpoint or start at 0, train to the last step.
    Returns (the final committed checkpoint, final loss)."""
    import torch.distributed as dist

    cfg, log = trainer.cfg, trainer.log
    if cfg.checkpoint.resume_policy == "restart" and trainer.runtime.is_main:
        for moved in store.archive(keep_run_id=key):
            log(f"checkpoint: resume_policy=restart archived {moved}")
    if dist.is_initialized():
        dist.barrier()
    resumed = store.load_latest(trainer.config_hash, trainer.load, log)
    log(f"{name}: resumed from {resumed.path} at step {trainer.step}, "
        f"{trainer.step * cfg.batch.global_batch_size} samples consumed" if resumed else
        f"{name}: no committed checkpoint, starting at step 0")
    final_loss = trainer.run()
    return store.committed()[-1], final_loss


# Settings every training DAG passes through unchanged (a Param each, and the flag --<name with dashes>).
PASSED_SETTINGS = (
    "steps", "micro_batch_size", "global_batch_size", "lr", "min_lr", "warmup_steps", "tensor_parallel",
    "pipeline_parallel", "data_parallel", "checkpoint_interval", "checkpoint_keep", "resume_policy",
    "eval_interval", "seed", "experiment",
)


def passed_flags(settings: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    flags = []
    for name in names:
        value = settings[name]
        if isinstance(value, bool):
            flags += [f"--{name.replace('_', '-')}"] if value else []
        else:
            flags += [f"--{name.replace('_', '-')}", ",".join(value) if isinstance(value, list) else str(value)]
    return flags


def step_resources(settings: dict[str, Any]) -> dict[str, Any]:
    """Resources of a training step's world: `nodes` pods of TP x PP x DP / nodes ranks each, GPUs if asked."""
    world = settings["tensor_parallel"] * settings["pipeline_parallel"] * settings["data_parallel"]
    if world % settings["nodes"]:
        raise ConfigError(f"nodes: world size {world} (tensor_parallel x pipeline_parallel x data_parallel) is not "
                          f"divisible by nodes={settings['nodes']}")
    gpus = settings["gpus_per_node"]
    return {"cpu": "8" if gpus else "2", "memory": "64Gi" if gpus else "8Gi", "gpus": gpus,
            "nodes": settings["nodes"], "processes_per_node": world // settings["nodes"]}


def cli_main(name: str, parser: argparse.ArgumentParser, plan: Callable, run: Callable,
             argv: list[str] | None) -> int:
    """`validate` prints the plan as JSON; `run` trains and rank 0 prints `<name> result {json}`. A refused setting
    exits 2 and an unusable checkpoint 3, each with one `error:` line naming the cause."""
    import json

    from tasks.common.versioned_data import LakeFSEndpoint

    args = parser.parse_args(argv)
    try:
        if args.verb == "validate":
            say(json.dumps(plan(args, LakeFSEndpoint.from_env()), sort_keys=True))
        else:
            result = run(args)
            if int(os.environ.get("RANK", "0")) == 0:
                say(f"{name} result " + json.dumps(result, sort_keys=True))
    except ConfigError as error:
        say(f"error: {error}")
        return 2
    except CheckpointUnusable as error:
        say(f"error: {error}")
        return 3
    return 0


def elapsed(began: float) -> float:
    return round(time.perf_counter() - began, 1)
