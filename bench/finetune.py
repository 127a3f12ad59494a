"""Fine-tuning cost: our LoRA for megatron-core vs full fine-tuning vs Hugging Face `peft` on the same model (issue 9).

    python bench/finetune.py --preset 1b --micro-batch-size 4          # one GPU: lora, full, peft, peft-bf16
    python bench/finetune.py --device cpu --preset tiny                # the CPU box: lora, full

Variants, all from the same initial weights and fed the same batches (GPTDataset over a synthetic .bin/.idx,
bench/train.py's helpers):
  lora       our path: build_gpt(compile=True on GPU) + apply_lora (all four targets) + Trainer.train_step
             (the 2026-11-26 runs' "lora+group" row is this path since lora.py names its TP group)
  full       the same without apply_lora (every parameter trained)
  peft       transformers LlamaForCausalLM built from export.llama_config / hf_llama_weights of the same state,
             SDPA attention, peft LoRA with the same rank, alpha and target modules (q/k/v/o/gate/up/down), peft's
             defaults otherwise (so adapters upcast to fp32), fused AdamW, foreach grad clipping, eager
  peft-bf16  the same with autocast_adapter_dtype=False (bf16 adapters, as ours)
  peft-compiled  peft-bf16 with every decoder layer compiled, as build_gpt compiles ours
The loss of every variant is the masked mean token cross entropy in fp32 over the same labels.

Timing as bench/train.py: warm-up steps (compilation included) excluded, timed rounds alternate the variants,
every step ends in a synchronize, the median step is reported. Memory: every variant stays resident while the
others run, so besides the process's peak ("peak GB") each row gives its own peak ("own peak GB"): the peak during
its steps less what the other variants held (their weights and optimizer states, measured after their warm-up).
On CPU memory is the resident set size's peak during the variant's timed steps (VmHWM, reset through
/proc/self/clear_refs first); RSS keeps what the allocator freed, so run one variant per process to compare them
(own peak and resident print n/a there).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.train import Variant, add_timing_arguments, datasets, sync, use_device, write_corpus  # noqa: E402
from tasks.training.config import (  # noqa: E402
    BatchConfig,
    CheckpointConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    model_preset,
)

SEED = 1234
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # = our four, unfused
VARIANTS = ("lora", "full", "peft", "peft-bf16", "peft-compiled")
OPTIM = OptimConfig(lr=1e-4, min_lr=1e-5, warmup_steps=2)


@dataclass
class Setup:
    model: ModelConfig
    micro: int
    steps: int  # every step any variant takes: the data it reads
    rank: int
    alpha: float
    corpus: Path
    workdir: Path


@dataclass
class Measured:
    variant: Variant
    trainable: int
    total: int
    resident_gb: float = 0.0  # what it holds between steps (weights, optimizer state), after warm-up
    own_peak_gb: float = 0.0


# --- memory -----------------------------------------------------------------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def current_gb() -> float:
    """Memory this process holds now: CUDA allocations on GPU, resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.memory_allocated() / 2**30
    return _status_kb("VmRSS") / 2**20


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def peak_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return _status_kb("VmHWM") / 2**20


def release() -> None:
    """After an out-of-memory error: give back what the failed variant held (compiled code stays, unlike free())."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- variants ---------------------------------------------------------------------------------------------------
def ours(setup: Setup, runtime, lora: bool, name: str, export: dict) -> Measured:
    """The trainer's path, as tasks/training/finetune.py runs it (minus loading a checkpoint)."""
    from tasks.training.checkpoint import CheckpointStore
    from tasks.training.lora import LoRAConfig, apply_lora, trainable
    from tasks.training.model import build_gpt
    from tasks.training.trainer import Trainer

    cfg = TrainConfig(model=setup.model, parallel=ParallelConfig(), optim=OPTIM,
                      batch=BatchConfig(steps=setup.steps, micro_batch_size=setup.micro,
                                        global_batch_size=setup.micro),
                      checkpoint=CheckpointConfig(str(setup.workdir / name)))
    train, valid = datasets(setup.corpus, setup.model, setup.steps * setup.micro, SEED)
    cuda = runtime.device.type == "cuda"
    torch.manual_seed(SEED)  # weights are drawn on CPU: every variant starts from the same ones
    model = build_gpt(setup.model, cfg.parallel, torch.bfloat16 if cuda else torch.float32, compile=cuda)
    if "state" not in export:
        export["state"] = model.state_dict()  # the base for the peft variants (tensors stay valid after .to())
    if lora:
        apply_lora(model, LoRAConfig(rank=setup.rank, alpha=setup.alpha), SEED)
    model = model.to(runtime.device)
    trainer = Trainer(cfg, runtime, model, train, valid, CheckpointStore(cfg.checkpoint.directory, keep=1), {},
                      log=lambda line: None, adapters_only=lora)

    def step() -> float:
        loss = trainer.train_step()
        trainer.step += 1
        return loss

    total = sum(p.numel() for p in model.parameters())
    return Measured(Variant(name, step, setup.micro * setup.model.seq_length), trainable(model.parameters()), total)


def tokenizer_dir(directory: Path) -> Path:
    """The few special tokens export.llama_config reads; the benchmark's data needs no real tokenizer."""
    from tokenizers import Tokenizer, models

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3}
    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(directory / "tokenizer.json"))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    return directory


def peft_variant(setup: Setup, device: torch.device, name: str, export: dict) -> Measured:
    """Hugging Face Llama of the same weights plus peft LoRA, trained with a plain loop on the same batches."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from tasks.training.data import batch
    from tasks.training.export import hf_llama_weights, llama_config

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    directory = setup.workdir / "tokenizer"
    directory.mkdir(parents=True, exist_ok=True)
    config = llama_config(setup.model, tokenizer_dir(directory), dtype)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.load_state_dict(hf_llama_weights(export["state"], setup.model), strict=True)
    lora = LoraConfig(r=setup.rank, lora_alpha=setup.alpha, lora_dropout=0.0, target_modules=HF_TARGETS,
                      task_type="CAUSAL_LM")
    model = get_peft_model(model, lora, autocast_adapter_dtype=name == "peft")
    if name == "peft-compiled":
        for layer in model.base_model.model.model.layers:
            layer.compile()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": OPTIM.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=OPTIM.lr, betas=(OPTIM.beta1, OPTIM.beta2), fused=device.type == "cuda")
    train, _ = datasets(setup.corpus, setup.model, setup.steps * setup.micro, SEED)
    state = {"step": 0}

    def step() -> float:
        data = {k: v.to(device, non_blocking=True) for k, v in batch(train, state["step"] * setup.micro,
                                                                   setup.micro).items()}
        logits = model(input_ids=data["tokens"], position_ids=data["position_ids"]).logits
        labels = data["labels"].masked_fill(data["loss_mask"] == 0, -100)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, OPTIM.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        return float(loss.detach())

    trainable, total = model.get_nb_trainable_parameters()
    return Measured(Variant(name, step, setup.micro * setup.model.seq_length), trainable, total)


# --- timing -----------------------------------------------------------------------------------------------------
def timed(measured: Measured, steps: int, others_resident_gb: float) -> None:
    variant = measured.variant
    reset_peak()
    for _ in range(steps):
        sync()
        began = time.perf_counter()
        variant.losses.append(variant.step())
        sync()
        variant.times.append(time.perf_counter() - began)
    variant.memory_gb = max(variant.memory_gb, peak_gb())
    measured.own_peak_gb = max(measured.own_peak_gb, peak_gb() - others_resident_gb)


def build(name: str, setup: Setup, runtime, export: dict) -> Measured:
    if name in ("lora", "full"):
        return ours(setup, runtime, name != "full", name, export)
    if "state" not in export:
        raise SystemExit(f"--variants: {name} needs lora or full before it (it starts from their weights)")
    return peft_variant(setup, runtime.device, name, export)


def table(rows: list[Measured], failed: dict[str, str]) -> list[str]:
    def gb(value: float) -> str:  # RSS keeps what the allocator freed: on CPU only a one-variant peak means much
        return f"{value:.2f}" if torch.cuda.is_available() else "n/a"

    full = next((m for m in rows if m.variant.name == "full"), None)
    lines = ["| variant | trainable params | trainable share | tokens/s | step ms (median) | step ms (min-max) | "
             "vs full | own peak GB | peak GB | resident GB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in rows:
        v = m.variant
        step_s = statistics.median(v.times)
        versus = f"{statistics.median(full.variant.times) / step_s:.2f}x" if full else "n/a"
        lines.append(f"| {v.name} | {m.trainable:,} | {m.trainable / m.total:.2%} | "
                     f"{v.tokens_per_step / step_s:,.0f} | {step_s * 1e3:.1f} | "
                     f"{min(v.times) * 1e3:.0f}-{max(v.times) * 1e3:.0f} | {versus} | {gb(m.own_peak_gb)} | "
                     f"{v.memory_gb:.2f} | {gb(m.resident_gb)} |")
    lines += [f"| {name} | failed: {why} |||||||||" for name, why in failed.items()]
    return lines


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda where there is one")
    p.add_argument("--preset", default=None, help="tiny | 125m | 1b (default: 1b on cuda, tiny on cpu)")
    p.add_argument("--seq-length", type=int, help="shorten the preset's sequence length")
    p.add_argument("--variants", help=f"comma-separated of {', '.join(VARIANTS)}; lora or full first (the peft ones "
                                      "start from their weights). Default: lora,full,peft,peft-bf16 on cuda, "
                                      "lora,full on cpu")
    p.add_argument("--micro-batch-size", type=int, default=None, help="default: 4 on cuda, 8 on cpu")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    add_timing_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cuda = use_device(args.device)
    names = (args.variants or ("lora,full,peft,peft-bf16" if cuda else "lora,full")).split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: {unknown} not among {', '.join(VARIANTS)}")
    model_cfg = model_preset(args.preset or ("1b" if cuda else "tiny"), args.seq_length)
    micro = args.micro_batch_size or (4 if cuda else 8)
    from tasks.training import distributed

    runtime = distributed.init(ParallelConfig(), SEED)
    measured: list[Measured] = []
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        total_steps = args.warmup + args.steps * args.rounds
        setup = Setup(model_cfg, micro, total_steps, args.lora_rank, args.lora_alpha, Path(tmp) / "corpus",
                      Path(tmp) / "work")
        setup.corpus.mkdir()
        write_corpus(setup.corpus, model_cfg.vocab_size, 4 * total_steps * micro * (model_cfg.seq_length + 1), 0)
        export: dict = {}
        for name in names:
            began, before = time.perf_counter(), current_gb()
            try:
                m = build(name, setup, runtime, export)
                for _ in range(args.warmup):
                    m.variant.losses.append(m.variant.step())
                sync()
            except Exception as error:  # noqa: BLE001 - one variant failing (memory, compiler, peft) keeps the rest
                failed[name] = f"{type(error).__name__} building or warming up: {str(error).splitlines()[0][:100]}"
                print(f"{name}: {failed[name]}", flush=True)
                release()
                continue
            m.resident_gb = current_gb() - before
            print(f"{name}: built + {args.warmup} warm-up steps {time.perf_counter() - began:.0f} s, resident "
                  f"{m.resident_gb:.2f} GB, losses {[round(x, 4) for x in m.variant.losses]}", flush=True)
            m.variant.times.clear()
            measured.append(m)
        export.clear()
        for _ in range(args.rounds):
            for m in list(measured):
                others = sum(o.resident_gb for o in measured if o is not m)
                try:
                    timed(m, args.steps, others)
                except torch.OutOfMemoryError as error:
                    failed[m.variant.name] = f"out of memory in timed steps ({str(error).splitlines()[0][:80]})"
                    measured.remove(m)
                    release()
    distributed.shutdown()
    device = (torch.cuda.get_device_name() if cuda else
              f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f})")
    versions = f"torch {torch.__version__}"
    for package in ("transformers", "peft", "megatron.core"):
        try:
            versions += f", {package} {__import__(package, fromlist=['__version__']).__version__}"
        except ImportError:
            pass
    print(f"\n{device}; {versions}; preset {model_cfg.preset}, seq {model_cfg.seq_length}, micro-batch {micro}, "
          f"{'bf16' if cuda else 'fp32'}; LoRA rank {args.lora_rank} alpha {args.lora_alpha:g}; median of "
          f"{args.rounds} x {args.steps} steps after {args.warmup} warm-up\n")
    lines = table(measured, failed)
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"device": device, "versions": versions, "rows": [
            {"variant": m.variant.name, "trainable": m.trainable, "total": m.total, "resident_gb": m.resident_gb,
             "own_peak_gb": m.own_peak_gb, "peak_gb": m.variant.memory_gb, "times": m.variant.times,
             "losses": m.variant.losses} for m in measured], "failed": failed}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
