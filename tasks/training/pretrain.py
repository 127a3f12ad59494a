"""Pre-train a Llama-style GPT with megatron-core on a curated corpus at one lakeFS commit.

    python -m tasks.training.pretrain validate --repo corpus --preset tiny ...   # checks only, prints the plan
    python -m tasks.training.pretrain run --repo corpus --preset tiny ...        # under torchrun for several ranks

`run` resumes by itself from the newest committed checkpoint in --checkpoint-dir (same config required unless
--resume-policy restart), logs every step (loss, lr, grad norm, tokens/s, MFU, memory) and, with an MLflow URI,
tracks params, metrics and lineage tags in one MLflow run found again by --run-key on a retry.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from tasks.common.versioned_data import LakeFSEndpoint
from tasks.training.checkpoint import CheckpointUnusable
from tasks.training.config import (
    BatchConfig,
    CheckpointConfig,
    ConfigError,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    model_preset,
)

H100_BF16_PEAK_FLOPS = 989e12  # dense bf16 Tensor Core peak of an H100 SXM


def say(line: str) -> None:
    """One write per line, so ranks sharing the launcher's pipe never interleave inside a line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m tasks.training.pretrain", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = root.add_subparsers(dest="verb", required=True)
    for verb, help_text in (("validate", "check settings and the dataset, print the plan; trains nothing"),
                            ("run", "train (resuming from the latest committed checkpoint)")):
        p = verbs.add_parser(verb, help=help_text)
        data = p.add_argument_group("data")
        data.add_argument("--repo", required=True, help="lakeFS repository curate_corpus published to")
        data.add_argument("--data-commit", default="main",
                          help="commit id (or ref, pinned to its commit at start) of the tokenized corpus (default: main)")
        data.add_argument("--cache-dir", type=Path, default=Path(".cache/datasets"),
                          help="local cache of datasets, one folder per commit id")
        model = p.add_argument_group("model")
        model.add_argument("--preset", default="tiny", help="tiny | 125m | 1b (default: tiny)")
        model.add_argument("--seq-length", type=int, help="override the preset's sequence length")
        par = p.add_argument_group("parallelism (world size must be TP x PP x DP)")
        par.add_argument("--tensor-parallel", type=int, default=1)
        par.add_argument("--pipeline-parallel", type=int, default=1)
        par.add_argument("--data-parallel", type=int, default=1)
        opt = p.add_argument_group("optimiser and schedule")
        opt.add_argument("--steps", type=int, default=200)
        opt.add_argument("--micro-batch-size", type=int, default=8)
        opt.add_argument("--global-batch-size", type=int, default=16)
        opt.add_argument("--lr", type=float, default=OptimConfig.lr)
        opt.add_argument("--min-lr", type=float, default=OptimConfig.min_lr)
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
        tr.add_argument("--experiment", default="pretrain", help="MLflow experiment")
        tr.add_argument("--run-key", default=None,
                        help="identifies this training across retries (the DAG passes dag id/run id); with "
                             "--resume-policy restart, checkpoints of other run keys are archived (default: fresh)")
        tr.add_argument("--peak-tflops", type=float, default=None,
                        help="per-device peak for MFU (default: 989 on an H100, none on CPU)")
    return root


# Settings a DAG run passes through unchanged: each is a Param of the `pretrain` DAG and the flag --<name with dashes>.
PASSED_SETTINGS = (
    "preset", "steps", "micro_batch_size", "global_batch_size", "lr", "min_lr", "warmup_steps", "tensor_parallel",
    "pipeline_parallel", "data_parallel", "checkpoint_interval", "checkpoint_keep", "resume_policy",
    "eval_interval", "seed", "experiment",
)


def cli_args(settings: dict[str, Any], *, repo: str, data_commit: str, artifact_root: str, run_key: str) -> list[str]:
    """The `run` command line for a DAG run: its checkpoints under <artifact_root>/checkpoints/<experiment>, so a
    retry, or a later run of the same experiment, resumes them."""
    args = ["run", "--repo", repo, "--data-commit", data_commit, "--run-key", run_key,
            "--checkpoint-dir", f"{artifact_root}/checkpoints/{settings['experiment']}",
            "--cache-dir", f"{artifact_root}/datasets"]
    for name in PASSED_SETTINGS:
        args += [f"--{name.replace('_', '-')}", str(settings[name])]
    return args


def launch_plan(settings: dict[str, Any], *, repo: str, data_commit: str, artifact_root: str, run_key: str,
                endpoint: LakeFSEndpoint) -> dict[str, Any]:
    """What the `pretrain` DAG's train step runs: the checked command line (data commit pinned) and the resources
    of its world (`nodes` pods of TP x PP x DP / nodes ranks each). Raises ConfigError naming the bad setting."""
    world = settings["tensor_parallel"] * settings["pipeline_parallel"] * settings["data_parallel"]
    if world % settings["nodes"]:
        raise ConfigError(f"nodes: world size {world} (tensor_parallel x pipeline_parallel x data_parallel) is not "
                          f"divisible by nodes={settings['nodes']}")
    args = cli_args(settings, repo=repo, data_commit=data_commit, artifact_root=artifact_root, run_key=run_key)
    checked = plan(parser().parse_args(["validate", *args[1:]]), endpoint)
    args[args.index("--data-commit") + 1] = checked["data_commit"]  # pinned: a later publish cannot move it
    gpus = settings["gpus_per_node"]
    resources = {"cpu": "8" if gpus else "2", "memory": "64Gi" if gpus else "8Gi", "gpus": gpus,
                 "nodes": settings["nodes"], "processes_per_node": world // settings["nodes"]}
    return {"args": args, "resources": resources, "plan": checked}


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        model=model_preset(args.preset, seq_length=args.seq_length),
        parallel=ParallelConfig(args.tensor_parallel, args.pipeline_parallel, args.data_parallel),
        optim=OptimConfig(lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup_steps,
                          weight_decay=args.weight_decay, grad_clip=args.grad_clip),
        batch=BatchConfig(steps=args.steps, micro_batch_size=args.micro_batch_size,
                          global_batch_size=args.global_batch_size, seed=args.seed,
                          eval_interval=args.eval_interval, eval_batches=args.eval_batches),
        checkpoint=CheckpointConfig(str(args.checkpoint_dir), args.checkpoint_interval, args.checkpoint_keep,
                                    args.resume_policy),
    )


def plan(args: argparse.Namespace, endpoint: LakeFSEndpoint) -> dict[str, Any]:
    """Every check that needs no training: settings, then the dataset at the commit against the model."""
    from tasks.training.data import published_info

    cfg = train_config(args)  # settings alone first: a bad Param is named before touching lakeFS
    info = published_info(endpoint, args.repo, args.data_commit)
    info.check_model(cfg.model)
    return {"data_commit": info.commit, "vocab_size": info.vocab_size, "train_tokens": info.train_tokens,
            "world_size": cfg.parallel.world_size, "config_hash": cfg.compatibility_hash(),
            "tokens_per_step": cfg.batch.global_batch_size * cfg.model.seq_length}


def code_version() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("LLMOPS_CODE_VERSION", "unknown")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from megatron.core import package_info

    from tasks.common.tracking import Tracker
    from tasks.training import distributed
    from tasks.training.checkpoint import CheckpointStore
    from tasks.training.data import build_datasets, fetch
    from tasks.training.model import build_gpt
    from tasks.training.trainer import MFU_FORMULA, Trainer

    cfg = train_config(args)
    info = fetch(LakeFSEndpoint.from_env(), args.repo, args.data_commit, args.cache_dir)
    info.check_model(cfg.model)
    runtime = distributed.init(cfg.parallel, cfg.batch.seed)
    log = say if runtime.is_main else (lambda line: None)
    dtype = torch.bfloat16 if runtime.device.type == "cuda" else torch.float32
    log(f"pretrain: preset {cfg.model.preset}, {cfg.model.matmul_params() / 1e6:.1f}M matmul params, "
        f"TP{cfg.parallel.tensor_parallel} PP{cfg.parallel.pipeline_parallel} DP{cfg.parallel.data_parallel} on "
        f"{runtime.device.type} ({dtype}), data lakefs://{args.repo}/{info.commit[:12]}; {MFU_FORMULA}")

    store = CheckpointStore(args.checkpoint_dir, keep=cfg.checkpoint.keep)
    run_key = args.run_key or f"cli-{uuid.uuid4().hex[:12]}"  # only rank 0 uses it
    if cfg.checkpoint.resume_policy == "restart" and runtime.is_main:
        for moved in store.archive(keep_run_id=run_key):
            log(f"checkpoint: resume_policy=restart archived {moved}")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()

    samples = cfg.batch.steps * cfg.batch.global_batch_size
    valid_samples = cfg.batch.eval_batches * cfg.batch.micro_batch_size * cfg.parallel.data_parallel
    train_data, valid_data = build_datasets(info, cfg.model.seq_length, samples, valid_samples, cfg.batch.seed)
    model = build_gpt(cfg.model, cfg.parallel, dtype).to(runtime.device)

    tracker = None
    if runtime.is_main:
        tracker = Tracker.from_env(args.experiment, run_key, run_name=f"pretrain-{cfg.model.preset}",
                                   uri=args.mlflow_uri, log=say, tags={
                                       "lakefs.repo": args.repo, "lakefs.commit": info.commit,
                                       "code_version": code_version(), "llmops.pipeline": "pretrain"})
        tracker.params({"preset": cfg.model.preset, **{f"{group}.{k}": v for group, values in cfg.as_dict().items()
                                                          for k, v in values.items()}})
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (H100_BF16_PEAK_FLOPS if "H100" in (
        torch.cuda.get_device_name() if torch.cuda.is_available() else "") else None)
    trainer = Trainer(
        cfg, runtime, model, train_data, valid_data, store,
        manifest_extra={"data_repo": args.repo, "data_commit": info.commit, "run_id": run_key,
                        "code_version": code_version(), "megatron_core": package_info.__version__,
                        "preset": cfg.model.preset, "vocab_size": cfg.model.vocab_size},
        log=log, on_metrics=(tracker.metrics if tracker else (lambda metrics, step: None)), peak_flops=peak,
    )
    ok = False
    try:
        resumed = None if cfg.checkpoint.resume_policy == "restart" and not store.committed() else \
            store.load_latest(cfg.compatibility_hash(), trainer.load, log)
        log(f"pretrain: resumed from {resumed.path} at step {trainer.step}, "
            f"{trainer.step * cfg.batch.global_batch_size} samples consumed" if resumed else
            "pretrain: no committed checkpoint, starting at step 0")
        began = time.perf_counter()
        final_loss = trainer.run()
        latest = store.committed()[-1]
        result = {"checkpoint": str(latest.path.resolve()), "step": trainer.step, "loss": final_loss,
                  "data_commit": info.commit, "mlflow_run_id": tracker.run_id if tracker else None,
                  "seconds": round(time.perf_counter() - began, 1)}
        if tracker:
            tracker.tags({"checkpoint_uri": result["checkpoint"], "final_step": trainer.step,
                          "final_loss": f"{final_loss:.6f}"})
        ok = True
        return result
    finally:
        if tracker:
            tracker.finish(ok)
        distributed.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.verb == "validate":
            say(json.dumps(plan(args, LakeFSEndpoint.from_env()), sort_keys=True))
        else:
            result = run(args)
            if int(os.environ.get("RANK", "0")) == 0:
                say("pretrain result " + json.dumps(result, sort_keys=True))
    except ConfigError as error:
        say(f"error: {error}")
        return 2
    except CheckpointUnusable as error:
        say(f"error: {error}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
