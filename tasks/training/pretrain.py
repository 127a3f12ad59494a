"""Pre-train a Llama-style GPT with megatron-core on a curated corpus at one lakeFS commit.

    python -m tasks.training.pretrain validate --repo corpus --preset tiny ...   # checks only, prints the plan
    python -m tasks.training.pretrain run --repo corpus --preset tiny ...        # under torchrun for several ranks

`run` resumes by itself from the newest committed checkpoint in --checkpoint-dir (same config required unless
--resume-policy restart), logs every step (loss, lr, grad norm, tokens/s, MFU, memory) and, with an MLflow URI,
tracks params, metrics and lineage tags in one MLflow run found again by --run-key on a retry.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tasks.common.versioned_data import LakeFSEndpoint
from tasks.training.config import OptimConfig, model_preset
from tasks.training.session import (
    PASSED_SETTINGS,
    add_training_arguments,
    cli_main,
    code_version,
    elapsed,
    open_tracker,
    passed_flags,
    peak_flops,
    resume_then_train,
    run_key,
    say,
    step_resources,
    train_config,
)


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
        add_training_arguments(p, experiment="pretrain", steps=200, lr=OptimConfig.lr)
    return root


def cli_args(settings: dict[str, Any], *, repo: str, data_commit: str, artifact_root: str, run_key: str) -> list[str]:
    """The `run` command line for a DAG run. Checkpoints go to <artifact_root>/checkpoints/<experiment>/<data commit>:
    a retry, or another run on the same data, resumes them; new data starts a new training."""
    return ["run", "--repo", repo, "--data-commit", data_commit, "--run-key", run_key,
            "--checkpoint-dir", f"{artifact_root}/checkpoints/{settings['experiment']}/{data_commit[:16]}",
            "--cache-dir", f"{artifact_root}/datasets", *passed_flags(settings, ("preset", *PASSED_SETTINGS))]


def launch_plan(settings: dict[str, Any], *, repo: str, data_commit: str, artifact_root: str, run_key: str,
                endpoint: LakeFSEndpoint) -> dict[str, Any]:
    """What the `pretrain` DAG's train step runs: the checked command line (data commit pinned) and its resources.
    Raises ConfigError naming the bad setting."""
    resources = step_resources(settings)
    where = dict(repo=repo, artifact_root=artifact_root, run_key=run_key)
    checked = plan(parser().parse_args(["validate", *cli_args(settings, data_commit=data_commit, **where)[1:]]),
                   endpoint)
    # pinned to the commit id: a later publish to the branch cannot move what this run trains on
    return {"args": cli_args(settings, data_commit=checked["data_commit"], **where), "resources": resources,
            "plan": checked}


def plan(args: argparse.Namespace, endpoint: LakeFSEndpoint) -> dict[str, Any]:
    """Every check that needs no training: settings, then the dataset at the commit against the model."""
    from tasks.training.data import published_info

    cfg = train_config(args, model_preset(args.preset, seq_length=args.seq_length))  # a bad Param before lakeFS
    info = published_info(endpoint, args.repo, args.data_commit)
    info.check_model(cfg.model)
    return {"data_commit": info.commit, "vocab_size": info.vocab_size, "train_tokens": info.train_tokens,
            "world_size": cfg.parallel.world_size, "config_hash": cfg.compatibility_hash(),
            "tokens_per_step": cfg.batch.global_batch_size * cfg.model.seq_length}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from megatron.core import package_info

    from tasks.training import distributed
    from tasks.training.checkpoint import CheckpointStore
    from tasks.training.data import build_datasets, fetch
    from tasks.training.model import build_gpt
    from tasks.training.trainer import MFU_FORMULA, Trainer

    cfg = train_config(args, model_preset(args.preset, seq_length=args.seq_length))
    info = fetch(LakeFSEndpoint.from_env(), args.repo, args.data_commit, args.cache_dir)
    info.check_model(cfg.model)
    runtime = distributed.init(cfg.parallel, cfg.batch.seed)
    log = say if runtime.is_main else (lambda line: None)
    dtype = torch.bfloat16 if runtime.device.type == "cuda" else torch.float32
    log(f"pretrain: preset {cfg.model.preset}, {cfg.model.matmul_params() / 1e6:.1f}M matmul params, "
        f"TP{cfg.parallel.tensor_parallel} PP{cfg.parallel.pipeline_parallel} DP{cfg.parallel.data_parallel} on "
        f"{runtime.device.type} ({dtype}), data lakefs://{args.repo}/{info.commit[:12]}; {MFU_FORMULA}")
    key = run_key(args)
    samples = cfg.batch.steps * cfg.batch.global_batch_size
    valid_samples = cfg.batch.eval_batches * cfg.batch.micro_batch_size * cfg.parallel.data_parallel
    train_data, valid_data = build_datasets(info, cfg.model.seq_length, samples, valid_samples, cfg.batch.seed)
    model = build_gpt(cfg.model, cfg.parallel, dtype, compile=runtime.device.type == "cuda").to(runtime.device)
    tracker = open_tracker(args, key, f"pretrain-{cfg.model.preset}", cfg, {
        "lakefs.repo": args.repo, "lakefs.commit": info.commit, "llmops.pipeline": "pretrain"},
        {"preset": cfg.model.preset}) if runtime.is_main else None
    store = CheckpointStore(args.checkpoint_dir, keep=cfg.checkpoint.keep)
    trainer = Trainer(
        cfg, runtime, model, train_data, valid_data, store,
        manifest_extra={"data_repo": args.repo, "data_commit": info.commit, "run_id": key,
                        "code_version": code_version(), "megatron_core": package_info.__version__,
                        "preset": cfg.model.preset, "vocab_size": cfg.model.vocab_size},
        log=log, on_metrics=(tracker.metrics if tracker else (lambda metrics, step: None)), peak_flops=peak_flops(args),
    )
    ok = False
    try:
        began = time.perf_counter()
        latest, final_loss = resume_then_train(trainer, store, key, "pretrain")
        result = {"checkpoint": str(latest.path.resolve()), "step": trainer.step, "loss": final_loss,
                  "data_commit": info.commit, "mlflow_run_id": tracker.run_id if tracker else None,
                  "seconds": elapsed(began)}
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
    return cli_main("pretrain", parser(), plan, run, argv)


if __name__ == "__main__":
    sys.exit(main())
