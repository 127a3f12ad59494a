"""The training loop: megatron-core GPT, AdamW, TP via megatron-core's parallel layers, DP via torch DDP.

Step s always reads global samples [s * global_batch, (s + 1) * global_batch) of the seeded GPTDataset, so the data
order after a resume is the order an uninterrupted run would have seen: no sample is repeated or skipped.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from tasks.training.checkpoint import Checkpoint, CheckpointStore, rng_state, set_rng_state
from tasks.training.config import BatchConfig, ModelConfig, OptimConfig, ParallelConfig, TrainConfig
from tasks.training.data import batch
from tasks.training.distributed import Runtime, mean_over
from tasks.training.model import clip_grad_norm_foreach

MFU_FORMULA = "MFU = (6 * N_matmul + 12 * layers * hidden * seq) * tokens/s / (peak FLOP/s * GPUs)"


def learning_rate(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at the last step; a pure function of the step."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms), fused kernels on GPU."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=optim.lr, betas=(optim.beta1, optim.beta2), fused=torch.cuda.is_available(),
    )


def masked_mean(per_token_loss: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    mask = loss_mask.to(per_token_loss.dtype)
    return (per_token_loss.float() * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class StepMetrics:
    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    mfu: float | None
    memory_gb: float

    def line(self) -> str:
        mfu = f"{self.mfu:.1%}" if self.mfu is not None else "n/a"
        return (f"step {self.step:>6}  loss {self.loss:.4f}  lr {self.lr:.2e}  grad_norm {self.grad_norm:.3f}  "
                f"tokens/s {self.tokens_per_s:,.0f}  MFU {mfu}  mem {self.memory_gb:.2f} GB")

    def as_metrics(self) -> dict[str, float]:
        values = {"loss": self.loss, "lr": self.lr, "grad_norm": self.grad_norm, "tokens_per_s": self.tokens_per_s,
                  "memory_gb": self.memory_gb}
        return values | ({"mfu": self.mfu} if self.mfu is not None else {})


def memory_gb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Trainer:
    """Train `model` (this rank's shard) for cfg.batch.steps steps, checkpointing into `store`."""

    cfg: TrainConfig
    runtime: Runtime
    model: torch.nn.Module
    train_data: Any
    valid_data: Any
    store: CheckpointStore
    manifest_extra: dict[str, Any]
    log: Callable[[str], None] = print
    on_metrics: Callable[[dict[str, float], int], None] = lambda metrics, step: None
    peak_flops: float | None = None
    adapters_only: bool = False  # LoRA: checkpoints hold the adapters; the frozen base is referenced, not copied
    compatibility: dict[str, Any] = field(default_factory=dict)  # more that a resumed checkpoint must share
    step: int = 0
    last_loss: float = float("nan")
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        parallel: ParallelConfig = self.cfg.parallel
        self.ddp = None
        if parallel.data_parallel > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, process_group=self.runtime.dp_group,
                device_ids=[self.runtime.device.index] if self.runtime.device.type == "cuda" else None,
            )
        self.optimizer = make_optimizer(self.model, self.cfg.optim)

    # --- checkpoints -------------------------------------------------------------------------
    @property
    def config_hash(self) -> str:
        return self.cfg.compatibility_hash(self.compatibility)

    def sharded_state(self) -> dict:
        from megatron.core.dist_checkpointing.mapping import ShardedObject

        p = self.cfg.parallel
        coordinates = ((p.tensor_parallel, p.pipeline_parallel), (self.runtime.tp_rank, 0))
        if self.adapters_only:
            from tasks.training.lora import adapter_state

            model = ShardedObject("adapters", adapter_state(self.model), *coordinates, replica_id=self.runtime.dp_rank)
        else:
            model = self.model.sharded_state_dict(prefix="model.")
        return {
            "model": model,
            "optimizer": ShardedObject("optimizer", self.optimizer.state_dict(), *coordinates,
                                       replica_id=self.runtime.dp_rank),
            "rng": ShardedObject("rng", rng_state(), (self.runtime.world_size,), (self.runtime.rank,), replica_id=0),
        }

    def load(self, checkpoint: Checkpoint) -> None:
        from megatron.core import dist_checkpointing

        state = dist_checkpointing.load(self.sharded_state(), str(checkpoint.path))
        if self.adapters_only:
            from tasks.training.lora import load_adapter_state

            load_adapter_state(self.model, state["model"])
        else:
            self.model.load_state_dict({k.removeprefix("model."): v for k, v in state["model"].items()}, strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.step = int(checkpoint.manifest["step"])
        self.last_loss = float(checkpoint.manifest.get("loss", "nan"))

    def save(self) -> Checkpoint:
        batch_cfg: BatchConfig = self.cfg.batch
        manifest = {
            **self.manifest_extra,
            "consumed_samples": self.step * batch_cfg.global_batch_size,
            "loss": self.last_loss,
            "config_hash": self.config_hash,
            "parallel": {"tensor_parallel": self.cfg.parallel.tensor_parallel,
                         "pipeline_parallel": self.cfg.parallel.pipeline_parallel,
                         "data_parallel": self.cfg.parallel.data_parallel},
            "config": self.cfg.as_dict(),
        }
        started = time.perf_counter()
        checkpoint = self.store.save(self.step, self.sharded_state(), manifest)
        self.log(f"checkpoint: step {self.step} committed to {checkpoint.path} in {time.perf_counter() - started:.1f}s")
        return checkpoint

    # --- training ----------------------------------------------------------------------------
    def _forward_loss(self, module: torch.nn.Module, data: dict[str, torch.Tensor]) -> torch.Tensor:
        data = {k: v.to(self.runtime.device, non_blocking=True) for k, v in data.items()}
        per_token = module(data["tokens"], data["position_ids"], None, labels=data["labels"])
        return masked_mean(per_token, data["loss_mask"])

    def train_step(self) -> float:
        cfg, rt = self.cfg, self.runtime
        micro, accumulation = cfg.batch.micro_batch_size, cfg.batch.accumulation_steps(cfg.parallel)
        module = self.ddp or self.model
        lr = learning_rate(self.step, cfg.optim, cfg.batch.steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for index in range(accumulation):
            first = self.step * cfg.batch.global_batch_size + (index * cfg.parallel.data_parallel + rt.dp_rank) * micro
            sync = self.ddp is None or index == accumulation - 1
            with nullcontext() if sync else self.ddp.no_sync():
                loss = self._forward_loss(module, batch(self.train_data, first, micro)) / accumulation
                loss.backward()
            total += float(loss.detach())
        grad_norm = clip_grad_norm_foreach(self.model, cfg.optim.grad_clip, rt.tp_group)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._lr, self._grad_norm = lr, float(grad_norm)
        return mean_over(total, rt.dp_group, cfg.parallel.data_parallel)

    @torch.no_grad()
    def evaluate(self) -> float:
        cfg, rt = self.cfg, self.runtime
        self.model.eval()
        micro, losses = cfg.batch.micro_batch_size, []
        for index in range(cfg.batch.eval_batches):
            first = (index * cfg.parallel.data_parallel + rt.dp_rank) * micro
            losses.append(float(self._forward_loss(self.model, batch(self.valid_data, first, micro))))
        self.model.train()
        return mean_over(sum(losses) / len(losses), rt.dp_group, cfg.parallel.data_parallel)

    def run(self) -> float:
        cfg = self.cfg
        model_cfg: ModelConfig = cfg.model
        tokens_per_step = cfg.batch.global_batch_size * model_cfg.seq_length
        self.model.train()
        while self.step < cfg.batch.steps:
            began = time.perf_counter()
            self.last_loss = self.train_step()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - began
            self.step += 1
            self.history.append(self.last_loss)
            tokens_per_s = tokens_per_step / elapsed
            mfu = (model_cfg.flops_per_token() * tokens_per_s / (self.peak_flops * self.runtime.world_size)
                   if self.peak_flops else None)
            metrics = StepMetrics(self.step, self.last_loss, self._lr, self._grad_norm, tokens_per_s, mfu, memory_gb())
            if self.runtime.is_main:
                self.log(metrics.line())
            self.on_metrics(metrics.as_metrics(), self.step)
            if self.step % cfg.batch.eval_interval == 0 or self.step == cfg.batch.steps:
                valid = self.evaluate()
                if self.runtime.is_main:
                    self.log(f"eval   {self.step:>6}  valid_loss {valid:.4f}  perplexity {math.exp(min(valid, 50)):.2f}")
                self.on_metrics({"valid_loss": valid, "valid_perplexity": math.exp(min(valid, 50))}, self.step)
            if self.step % cfg.checkpoint.interval == 0 or self.step == cfg.batch.steps:
                self.save()
        return self.last_loss
