"""Fine-tune a pre-trained checkpoint on instructions: LoRA adapters (or full fine-tuning), then export and register.

    python -m tasks.training.finetune validate --base CKPT --repo corpus ...   # checks only, prints the plan
    python -m tasks.training.finetune run --base CKPT --repo corpus ...        # under torchrun for several ranks

`run` loads the base checkpoint (any TP layout: dist_checkpointing reshards), checks and tokenises the SFT set at
its lakeFS commit (tasks.training.sft), logs the validation loss before and after, checkpoints and resumes like
pre-training (LoRA checkpoints hold only the adapters), then on rank 0: exports the base as a Hugging Face Llama
checkpoint, the adapter in PEFT's format and, with --merge-after, base + adapter merged (fp32, then cast) as a
standalone checkpoint (full fine-tuning exports the tuned model), and registers each in MLflow with its lineage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.common.versioned_data import LakeFSEndpoint
from tasks.training.config import ConfigError, ModelConfig
from tasks.training.lora import TARGETS, LoRAConfig
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

METHODS = ("lora", "full")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m tasks.training.finetune", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = root.add_subparsers(dest="verb", required=True)
    for verb, help_text in (("validate", "check settings, the base and the SFT data; trains nothing"),
                            ("run", "fine-tune (resuming), export and register")):
        p = verbs.add_parser(verb, help=help_text)
        p.add_argument("--base", required=True, help="pre-training checkpoint (a step-NNNNNNNN folder or its store) or "
                                                     "a registered version models:/<name>/<version or alias>")
        p.add_argument("--repo", required=True, help="lakeFS repository holding sft/*.jsonl")
        p.add_argument("--sft-commit", default="main", help="commit id or ref of the SFT data (default: main)")
        p.add_argument("--method", default="lora", help="lora | full (default: lora)")
        p.add_argument("--lora-rank", type=int, default=8)
        p.add_argument("--lora-alpha", type=float, default=16.0)
        p.add_argument("--lora-dropout", type=float, default=0.0)
        p.add_argument("--lora-targets", default=",".join(TARGETS), help=f"comma-separated subset of {TARGETS}")
        p.add_argument("--merge-after", action="store_true", help="also export base + adapter merged")
        p.add_argument("--export-dir", type=Path, help="where exports go (default: <checkpoint dir>/exports)")
        p.add_argument("--model-name", default=None, help="registered model name (default: llmops-<preset>)")
        add_training_arguments(p, experiment="finetune", steps=60, lr=1e-3)
    return root


FINETUNE_SETTINGS = ("method", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "merge_after")


def cli_args(settings: dict[str, Any], *, base: str, repo: str, sft_commit: str, artifact_root: str,
             run_key: str) -> list[str]:
    """The `run` command line for a DAG run. Checkpoints and exports go to <artifact_root>/checkpoints/<experiment>/
    <key of base and SFT commit>: a retry resumes them; another base or SFT set starts a new fine-tune."""
    inputs = hashlib.sha256(f"{base}\0{sft_commit}".encode()).hexdigest()[:16]
    return ["run", "--base", base, "--repo", repo, "--sft-commit", sft_commit, "--run-key", run_key,
            "--checkpoint-dir", f"{artifact_root}/checkpoints/{settings['experiment']}/{inputs}",
            *passed_flags(settings, (*FINETUNE_SETTINGS, *PASSED_SETTINGS))]


def launch_plan(settings: dict[str, Any], *, base: str, repo: str, sft_commit: str, artifact_root: str,
                run_key: str, endpoint: LakeFSEndpoint) -> dict[str, Any]:
    """What the `finetune` DAG's train step runs: the checked command line (SFT commit pinned) and its resources.
    Raises ConfigError naming the bad setting."""
    resources = step_resources(settings)
    where = dict(repo=repo, artifact_root=artifact_root, run_key=run_key)
    args = cli_args(settings, base=base, sft_commit=sft_commit, **where)
    checked = plan(parser().parse_args(["validate", *args[1:]]), endpoint)
    pinned = cli_args(settings, base=checked["base"], sft_commit=checked["sft_commit"], **where)
    return {"args": pinned, "resources": resources, "plan": checked}


def lora_config(args: argparse.Namespace) -> LoRAConfig | None:
    if args.method not in METHODS:
        raise ConfigError(f"method: {args.method!r} is not one of {', '.join(METHODS)}")
    if args.method == "full":
        return None
    targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
    return LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha, dropout=args.lora_dropout, targets=targets)


def base_manifest(base: str, mlflow_uri: str | None = None) -> tuple[Path, dict[str, Any], ModelConfig]:
    """The base checkpoint: a path, or a registered version `models:/<name>/<version or alias>` that has one."""
    from tasks.training.export import resolve_checkpoint

    if base.startswith("models:/"):
        from tasks.common import registry

        name, _, version = base.removeprefix("models:/").partition("/")
        uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ConfigError(f"base: {base} names a registered version but no MLflow URI is set")
        try:
            found = registry.resolve(uri, name, version or registry.CANDIDATE)
        except LookupError as error:
            raise ConfigError(str(error)) from error
        if registry.CHECKPOINT_TAG not in found.tags:
            raise ConfigError(f"base: {base} (version {found.version}) has no megatron checkpoint, it is a "
                              f"{found.tags.get('method', 'derived')} export; pick a pre-trained or full fine-tune")
        base = found.tags[registry.CHECKPOINT_TAG]
    try:
        path = resolve_checkpoint(base)
    except FileNotFoundError as error:
        raise ConfigError(f"base: {str(error).removeprefix('checkpoint: ')}") from error
    manifest = json.loads((path / "manifest.json").read_text())
    return path, manifest, ModelConfig(**manifest["config"]["model"])


def plan(args: argparse.Namespace, endpoint: LakeFSEndpoint) -> dict[str, Any]:
    """Settings, base checkpoint and SFT data, checked in that order; the SFT set's report comes back too."""
    from tasks.training import sft

    adapter = lora_config(args)
    path, manifest, model_cfg = base_manifest(args.base, args.mlflow_uri)
    cfg = train_config(args, model_cfg)
    commit, examples, rejected = sft.read_at(endpoint, args.repo, args.sft_commit)
    checked = sft.check(examples, rejected)
    return {"base": str(path.resolve()), "base_step": manifest["step"], "pretrain_commit": manifest["data_commit"],
            "sft_commit": commit, "train_examples": len(checked.train), "valid_examples": len(checked.valid),
            "rejected": len(checked.rejected), "method": args.method, "world_size": cfg.parallel.world_size,
            "lora": None if adapter is None else adapter.__dict__}


def load_base_weights(model, checkpoint: Path) -> None:
    """The base checkpoint's weights into this rank's shard, whatever TP layout saved them."""
    from megatron.core import dist_checkpointing

    loaded = dist_checkpointing.load({"model": model.sharded_state_dict(prefix="model.")}, str(checkpoint))
    model.load_state_dict({k.removeprefix("model."): v for k, v in loaded["model"].items()}, strict=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from megatron.core import package_info

    from tasks.training import distributed, sft
    from tasks.training.checkpoint import CheckpointStore
    from tasks.training.data import fetch
    from tasks.training.lora import apply_lora, trainable
    from tasks.training.model import build_gpt
    from tasks.training.peft_export import gather_adapters
    from tasks.training.trainer import Trainer

    adapter = lora_config(args)
    base_path, manifest, model_cfg = base_manifest(args.base, args.mlflow_uri)
    cfg = train_config(args, model_cfg)
    endpoint = LakeFSEndpoint.from_env()
    data = fetch(endpoint, manifest["data_repo"], manifest["data_commit"], Path(args.checkpoint_dir) / "data-cache")
    sft_commit, examples, rejected = sft.read_at(endpoint, args.repo, args.sft_commit)
    checked = sft.check(examples, rejected)
    tokenizer_file = data.directory / "tokenizer" / "tokenizer.json"
    train_data = sft.SFTDataset(checked.train, tokenizer_file, model_cfg.seq_length)
    valid_data = sft.SFTDataset(checked.valid or checked.train, tokenizer_file, model_cfg.seq_length)

    runtime = distributed.init(cfg.parallel, cfg.batch.seed)
    log = say if runtime.is_main else (lambda line: None)
    for entry in [*checked.rejected, *train_data.too_long]:
        log(f"sft: set aside {entry['id']} ({entry['stage']}: {entry['reason']})")
    log(f"sft: {len(train_data)} train / {len(valid_data)} valid examples at lakefs://{args.repo}/{sft_commit[:12]}; "
        f"{checked.gate_summary}")
    dtype = torch.bfloat16 if runtime.device.type == "cuda" else torch.float32
    model = build_gpt(model_cfg, cfg.parallel, dtype, compile=runtime.device.type == "cuda")
    load_base_weights(model, base_path)
    if adapter:
        apply_lora(model, adapter, cfg.batch.seed, runtime.tp_rank, cfg.parallel.tensor_parallel)
    model = model.to(runtime.device)
    total = sum(p.numel() for p in model.parameters())
    log(f"finetune: {args.method} on {base_path} (step {manifest['step']}), {trainable(model.parameters()):,} of "
        f"{total:,} parameters trainable ({trainable(model.parameters()) / total:.2%})")

    key = run_key(args)
    lineage = {"base_checkpoint": str(base_path.resolve()), "pretrain_commit": manifest["data_commit"],
               "sft_repo": args.repo, "sft_commit": sft_commit, "method": args.method}
    tracker = open_tracker(args, key, f"finetune-{model_cfg.preset}-{args.method}", cfg, {
        "lakefs.repo": args.repo, "lakefs.commit": sft_commit, "llmops.pipeline": "finetune", **lineage},
        {"method": args.method, **({f"lora.{k}": v for k, v in adapter.__dict__.items()} if adapter else {})}
    ) if runtime.is_main else None
    store = CheckpointStore(args.checkpoint_dir, keep=cfg.checkpoint.keep)
    trainer = Trainer(
        cfg, runtime, model, train_data, valid_data, store, log=log, peak_flops=peak_flops(args),
        manifest_extra={**lineage, "data_repo": manifest["data_repo"], "data_commit": manifest["data_commit"],
                        "run_id": key, "code_version": code_version(), "megatron_core": package_info.__version__,
                        "preset": model_cfg.preset, "vocab_size": model_cfg.vocab_size},
        on_metrics=(tracker.metrics if tracker else (lambda metrics, step: None)),
        adapters_only=adapter is not None,
        compatibility={"base": str(base_path.resolve()), "lora": adapter.__dict__ if adapter else None},
    )
    ok = False
    try:
        before = trainer.evaluate()
        log(f"finetune: validation loss before {before:.4f}")
        began = time.perf_counter()
        latest, final_loss = resume_then_train(trainer, store, key, "finetune")
        after = trainer.evaluate()
        log(f"finetune: validation loss after {after:.4f} (before {before:.4f})")
        adapters = gather_adapters(model, runtime.tp_group) if adapter else None
        if tracker:
            tracker.metrics({"valid_loss_before": before, "valid_loss_after": after}, trainer.step)
        result = {"checkpoint": str(latest.path.resolve()), "step": trainer.step, "loss": final_loss,
                  "valid_loss_before": before, "valid_loss_after": after, "sft_commit": sft_commit,
                  "mlflow_run_id": tracker.run_id if tracker else None, "seconds": elapsed(began)}
        distributed.shutdown()
        if runtime.is_main:
            result["registered"] = publish(args, model_cfg, base_path, latest.path, manifest, adapter, adapters,
                                           data.directory / "tokenizer", tracker, lineage, after)
            tracker.tags({"checkpoint_uri": result["checkpoint"], "final_step": trainer.step,
                          "final_loss": f"{final_loss:.6f}", "registered": json.dumps(result["registered"])})
        ok = True
        return result
    finally:
        if tracker:
            tracker.finish(ok)
        if torch.distributed.is_initialized():
            distributed.shutdown()


def publish(args, model_cfg: ModelConfig, base_path: Path, final: Path, manifest: dict[str, Any],
            adapter: LoRAConfig | None, adapters, tokenizer_dir: Path, tracker, lineage: dict[str, str],
            valid_loss: float) -> dict[str, Any]:
    """Export (HF Llama base, PEFT adapter, merged or full model) and register each version in MLflow."""
    from tasks.common import registry
    from tasks.training.export import load_full_state, to_hf_llama
    from tasks.training.peft_export import merge_into, save_peft_adapter
    from tasks.training.sft import CHAT_TEMPLATE

    exports = args.export_dir or Path(args.checkpoint_dir) / "exports"
    name = args.model_name or f"llmops-{model_cfg.preset}"
    base_state, _ = load_full_state(base_path)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _with_chat_template(tokenizer_dir, Path(scratch), CHAT_TEMPLATE)
        base_hf = to_hf_llama(base_state, model_cfg, tokenizer, exports / "base-hf")
        out: dict[str, Any] = {}
        uri = tracker.uri if tracker and tracker.enabled else None
        common = {**lineage, "preset": model_cfg.preset, "code_version": code_version()}

        def register(model_name: str, directory: Path, artifact: str, tags: dict[str, Any]) -> dict[str, str] | None:
            if not uri:
                return None
            version = registry.register(uri, model_name, tracker.run_id, directory, artifact, tags)
            say(f"registry: {model_name} version {version.version} ({version.source}) is now '{registry.CANDIDATE}'")
            return {"name": model_name, "version": version.version, "source": version.source}

        base_version = registry.find(uri, name, registry.CHECKPOINT_TAG, str(base_path.resolve())) if uri else None
        out["base"] = ({"name": name, "version": base_version.version, "source": base_version.source} if base_version
                       else register(name, base_hf, "base-hf", {**common, "method": "pretrain",
                                                              registry.CHECKPOINT_TAG: str(base_path.resolve())}))
        tags = {**common, "base_version": (out["base"] or {}).get("version", ""), "valid_loss": f"{valid_loss:.6f}"}
        if adapter:
            adapter_dir = save_peft_adapter(adapters, model_cfg, adapter, str(base_hf), exports / "adapter-peft")
            out["adapter"] = register(f"{name}-lora", adapter_dir, "adapter-peft",
                                      {**tags, "artifact": str(adapter_dir)})
            if args.merge_after:
                merged = to_hf_llama(merge_into(base_state, adapters, adapter.scaling), model_cfg, tokenizer,
                                     exports / "merged-hf")
                out["merged"] = register(name, merged, "merged-hf", {**tags, "method": "lora-merged",
                                                                    "artifact": str(merged)})
        else:
            tuned_state, _ = load_full_state(final)
            tuned = to_hf_llama(tuned_state, model_cfg, tokenizer, exports / "full-hf")
            out["full"] = register(name, tuned, "full-hf", {**tags, "artifact": str(tuned),
                                                            registry.CHECKPOINT_TAG: str(final.resolve())})
    return out


def _with_chat_template(tokenizer_dir: Path, scratch: Path, template: str) -> Path:
    """The tokenizer files with the SFT chat template in tokenizer_config.json, so exports format chats alike."""
    import shutil

    from tasks.training.export import TOKENIZER_FILES

    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, scratch / name)
    config = json.loads((scratch / "tokenizer_config.json").read_text())
    (scratch / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}, indent=2))
    return scratch


def main(argv: list[str] | None = None) -> int:
    return cli_main("finetune", parser(), plan, run, argv)


if __name__ == "__main__":
    sys.exit(main())
