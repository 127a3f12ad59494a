"""Pre-training throughput: tokens/s and MFU of the megatron-core trainer against a compiled plain-PyTorch GPT.

    python bench/train.py --preset 125m --preset 1b                  # one GPU: ours and the baseline, A B A B
    torchrun --nproc-per-node 2 bench/train.py --preset 1b --data-parallel 2   # ours only, several GPUs
    python bench/train.py --device cpu --preset tiny                 # the CPU box

Ours is the real code path: `build_gpt` + `Trainer.train_step` (data from megatron's GPTDataset over a synthetic
.bin/.idx written with IndexedDatasetBuilder, AdamW, grad clipping, DDP/TP). The baseline is the same architecture
(RMSNorm, SwiGLU, RoPE, no bias, untied embeddings) in plain PyTorch: SDPA, bf16 parameters, fused AdamW, the same
clipping, the whole model under `torch.compile`, fed the same batches. Each variant warms up (compilation
included) before timing; timed rounds alternate between variants, since the lent GPU drifts; each step is timed
to a CUDA synchronize and the median step is reported.
MFU = (6 * N_matmul + 12 * layers * hidden * seq) * tokens/s / (989e12 * GPUs), as ModelConfig.flops_per_token.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.training.config import (  # noqa: E402
    BatchConfig,
    CheckpointConfig,
    ModelConfig,
    OptimConfig,
    ParallelConfig,
    TrainConfig,
    model_preset,
)

H100_PEAK = 989e12
DEFAULT_MICRO_BATCH = {"tiny": 8, "125m": 16, "1b": 8}


# --- data -------------------------------------------------------------------------------------------------------
def write_corpus(directory: Path, vocab_size: int, tokens: int, seed: int) -> None:
    """Train/valid .bin/.idx of learnable documents: a random phrase repeated, so the loss falls in a few steps."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    for prefix, count in (("train_text_document", tokens), ("valid_text_document", tokens // 10)):
        builder = IndexedDatasetBuilder(str(directory / f"{prefix}.bin"), dtype=np.int32)
        written = 0
        while written < count:
            phrase = rng.integers(1, vocab_size, size=int(rng.integers(8, 64)), dtype=np.int32)
            document = np.concatenate([np.tile(phrase, int(rng.integers(8, 48))), np.zeros(1, np.int32)])  # 0 = eod
            builder.add_document(torch.from_numpy(document), [len(document)])
            written += len(document)
        builder.finalize(str(directory / f"{prefix}.idx"))


def datasets(directory: Path, model: ModelConfig, samples: int, seed: int):
    from tasks.training.data import DatasetInfo, build_datasets

    info = DatasetInfo(directory, "synthetic", model.vocab_size, 0, 0, 10**9, 10**8)
    return build_datasets(info, model.seq_length, samples, 64, seed)


# --- the plain PyTorch baseline ---------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, m: ModelConfig) -> None:
        super().__init__()
        h, f = m.hidden_size, m.ffn_hidden_size
        self.heads = m.num_attention_heads
        self.attn_norm, self.mlp_norm = nn.RMSNorm(h, eps=1e-5), nn.RMSNorm(h, eps=1e-5)
        self.qkv, self.proj = nn.Linear(h, 3 * h, bias=False), nn.Linear(h, h, bias=False)
        self.gate_up, self.down = nn.Linear(h, 2 * f, bias=False), nn.Linear(f, h, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, s, 3, self.heads, -1).unbind(2)
        q, k = (rope(t, cos, sin).transpose(1, 2) for t in (q, k))
        attn = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), is_causal=True)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, s, h))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE, as megatron's (non-interleaved)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


class PlainGPT(nn.Module):
    def __init__(self, m: ModelConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(m.vocab_size, m.hidden_size)
        self.blocks = nn.ModuleList(Block(m) for _ in range(m.num_layers))
        self.norm = nn.RMSNorm(m.hidden_size, eps=1e-5)
        self.head = nn.Linear(m.hidden_size, m.vocab_size, bias=False)
        inv_freq = 1.0 / m.rotary_base ** (torch.arange(0, m.head_dim, 2).float() / m.head_dim)
        angles = torch.outer(torch.arange(m.seq_length).float(), inv_freq).repeat(1, 2)[:, None, :]  # [s, 1, d]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)


# --- variants: one callable per training step ---------------------------------------------------------------------
@dataclass
class Variant:
    name: str
    step: Callable[[], float]
    tokens_per_step: int
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    memory_gb: float = 0.0


def ours(runtime, model_cfg: ModelConfig, parallel: ParallelConfig, micro: int, accumulation: int,
         total_steps: int, corpus: Path, workdir: Path, compile: str, name: str) -> Variant:
    """The trainer itself: build_gpt, Trainer.train_step over GPTDataset batches.

    compile: layers (build_gpt's compile=True), model (the whole GPTModel) or off. Since 2026-11-26 the trainer
    clips with clip_grad_norm_foreach, so this is what the runs of that day called "ours+clip"."""
    from tasks.training.checkpoint import CheckpointStore
    from tasks.training.model import build_gpt
    from tasks.training.trainer import Trainer

    global_batch = micro * parallel.data_parallel * accumulation
    cfg = TrainConfig(model=model_cfg, parallel=parallel, optim=OptimConfig(lr=3e-4, min_lr=3e-5, warmup_steps=2),
                      batch=BatchConfig(steps=total_steps, micro_batch_size=micro, global_batch_size=global_batch),
                      checkpoint=CheckpointConfig(str(workdir / "checkpoints")))
    train, valid = datasets(corpus, model_cfg, total_steps * global_batch, cfg.batch.seed)
    dtype = torch.bfloat16 if runtime.device.type == "cuda" else torch.float32
    torch.manual_seed(cfg.batch.seed)  # weights are drawn on CPU: every variant and TP layout starts equal
    model = build_gpt(model_cfg, parallel, dtype, compile=compile == "layers").to(runtime.device)
    if compile == "model":
        model.compile()
    trainer = Trainer(cfg, runtime, model, train, valid, CheckpointStore(cfg.checkpoint.directory, keep=1), {},
                      log=lambda line: None)

    def step() -> float:
        loss = trainer.train_step()
        trainer.step += 1
        return loss

    return Variant(name, step, global_batch * model_cfg.seq_length)


def baseline(model_cfg: ModelConfig, micro: int, total_steps: int, corpus: Path, name: str) -> Variant:
    """Plain PyTorch on one GPU, the same batches (sample indices) as ours at DP=1."""
    from tasks.training.data import batch

    torch.manual_seed(1234)
    model = PlainGPT(model_cfg).to("cuda", torch.bfloat16)
    optim = OptimConfig(lr=3e-4)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=optim.lr, betas=(optim.beta1, optim.beta2), fused=True)
    compiled = torch.compile(model)
    train, _ = datasets(corpus, model_cfg, total_steps * micro, 1234)
    state = {"step": 0}

    def step() -> float:
        data = {k: v.to("cuda", non_blocking=True) for k, v in batch(train, state["step"] * micro, micro).items()}
        per_token = compiled(data["tokens"], data["labels"])
        mask = data["loss_mask"].float()
        loss = (per_token * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        return float(loss.detach())

    return Variant(name, step, micro * model_cfg.seq_length)


# --- timing -----------------------------------------------------------------------------------------------------
def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(variant: Variant, steps: int) -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    for _ in range(steps):
        sync()
        began = time.perf_counter()
        variant.losses.append(variant.step())
        sync()
        variant.times.append(time.perf_counter() - began)
    if torch.cuda.is_available():
        variant.memory_gb = max(variant.memory_gb, torch.cuda.max_memory_allocated() / 2**30)


def free(variants: list[Variant]) -> None:
    variants.clear()
    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Row:
    preset: str
    variant: str
    micro_batch: int
    gpus: int
    tokens_per_s: float
    mfu: float | None
    step_ms: float
    spread: str
    memory_gb: float
    losses: list[float]

    def line(self) -> str:
        mfu = f"{self.mfu:.1%}" if self.mfu is not None else "n/a"
        return (f"| {self.preset} | {self.variant} | {self.micro_batch} | {self.gpus} | {self.tokens_per_s:,.0f} | "
                f"{mfu} | {self.step_ms:.1f} | {self.spread} | {self.memory_gb:.1f} |")


def row(preset: str, variant: Variant, micro: int, gpus: int, model_cfg: ModelConfig, peak: float | None) -> Row:
    step_s = statistics.median(variant.times)
    tokens_per_s = variant.tokens_per_step / step_s
    mfu = model_cfg.flops_per_token() * tokens_per_s / (peak * gpus) if peak else None
    spread = f"{min(variant.times) * 1e3:.0f}-{max(variant.times) * 1e3:.0f}"
    return Row(preset, variant.name, micro, gpus, tokens_per_s, mfu, step_s * 1e3, spread, variant.memory_gb,
               [round(x, 4) for x in variant.losses])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), help="default: cuda where there is one")
    p.add_argument("--preset", action="append", help="tiny | 125m | 1b, repeatable (default: 125m and 1b on cuda, "
                                                     "tiny on cpu)")
    p.add_argument("--variants", default=None,
                   help="comma-separated of: ours (the trainer; compiled layers on cuda), ours-eager (compile off), "
                        "ours-whole (the whole GPTModel compiled), baseline (compiled plain PyTorch, one GPU). "
                        "Default: ours,baseline on one GPU, ours otherwise")
    p.add_argument("--micro-batch-size", type=int, help=f"default per preset: {DEFAULT_MICRO_BATCH}")
    p.add_argument("--accumulation", type=int, default=1, help="micro-batches per step (ours only)")
    p.add_argument("--tensor-parallel", type=int, default=1)
    p.add_argument("--data-parallel", type=int, default=1)
    add_timing_arguments(p)
    return p


def add_timing_arguments(p: argparse.ArgumentParser) -> None:
    """Warm-up, timed steps and rounds, and the JSON dump: the same for every training benchmark."""
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant (compilation happens here)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds, alternating the variants")
    p.add_argument("--json", type=Path, help="also write the rows (with every step's time and loss) here")


def use_device(device: str | None) -> bool:
    """True for CUDA. --device cpu hides the GPUs before CUDA initialises: the trainer picks its device by them."""
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise SystemExit("--device cuda: no CUDA device here")
    return cuda


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cuda = use_device(args.device)
    parallel = ParallelConfig(args.tensor_parallel, 1, args.data_parallel)
    gpus = parallel.world_size if cuda else 0
    names = (args.variants or ("ours,baseline" if cuda and parallel.world_size == 1 else "ours")).split(",")
    if "baseline" in names and not (cuda and parallel.world_size == 1):
        raise SystemExit("the baseline runs on one GPU only")
    peak = H100_PEAK if cuda and "H100" in torch.cuda.get_device_name() else None
    presets = args.preset or (["125m", "1b"] if cuda else ["tiny"])
    from tasks.training import distributed

    runtime = distributed.init(parallel, 1234)
    rank = runtime.rank
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as own_tmp:
        shared = [own_tmp]
        torch.distributed.broadcast_object_list(shared, src=0)  # every rank reads rank 0's corpus
        tmp = shared[0]
        for preset in presets:
            model_cfg = model_preset(preset)
            micro = args.micro_batch_size or DEFAULT_MICRO_BATCH[preset]
            total = args.warmup + args.steps * args.rounds
            corpus = Path(tmp) / preset
            if rank == 0:
                corpus.mkdir()
                write_corpus(corpus, model_cfg.vocab_size, 4 * total * micro * parallel.data_parallel *
                             args.accumulation * (model_cfg.seq_length + 1), seed=0)
            torch.distributed.barrier()
            variants: list[Variant] = []
            for name in names:
                if name == "baseline":
                    variants.append(baseline(model_cfg, micro, total, corpus, name))
                else:
                    compile = "off" if not cuda or "eager" in name else "model" if "whole" in name else "layers"
                    variants.append(ours(runtime, model_cfg, parallel, micro, args.accumulation, total, corpus,
                                         Path(tmp) / preset / name, compile, name))
            for variant in variants:
                began = time.perf_counter()
                timed(variant, args.warmup)
                if rank == 0:
                    print(f"{preset} {variant.name}: {args.warmup} warm-up steps {time.perf_counter() - began:.0f} s, "
                          f"losses {[round(x, 3) for x in variant.losses]}", flush=True)
                variant.times.clear()
            for _ in range(args.rounds):
                for variant in variants:
                    timed(variant, args.steps)
            rows += [row(preset, v, micro, gpus, model_cfg, peak) for v in variants]
            free(variants)
    distributed.shutdown()
    if rank != 0:
        return 0
    device = torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"\n{device}; TP{parallel.tensor_parallel} DP{parallel.data_parallel}; torch {torch.__version__}; "
          f"median of {args.rounds} x {args.steps} steps after {args.warmup} warm-up; "
          f"MFU = (6 N_matmul + 12 L h s) tokens/s / (989e12 x GPUs)\n")
    print("| preset | variant | micro-batch | GPUs | tokens/s | MFU | step ms (median) | step ms (min-max) | "
          "peak GB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(r.line())
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
