"""LoRA adapters for megatron-core's tensor-parallel linear layers (megatron-core has none).

y = W x + (alpha / r) * B A dropout(x), with the base W frozen. Under tensor parallelism each adapter is split the
way its base layer is, so that TP=N computes exactly what TP=1 computes:
- column-parallel base (QKV, fc1; output split over ranks): A is whole on every rank, B is split by output rows;
  A's output goes through megatron's copy-to-TP region, whose backward all-reduces, so A's gradient is the full one.
- row-parallel base (output projection, fc2; input split over ranks): A is split by input columns, B is whole;
  the rank-local A x partial sums are all-reduced once, on the small r-wide tensor, not on the layer's output.
A is drawn for the whole matrix from a generator seeded by (seed, module name) and then sliced, so the same seed
gives the same adapter whatever the TP size (a shard-local fan-in init would shift the converged loss with TP).
B starts at zero, so an untrained adapter leaves the model unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from megatron.core.tensor_parallel import (
    copy_to_tensor_model_parallel_region,
    reduce_from_tensor_model_parallel_region,
    set_tensor_model_parallel_attributes,
)

from tasks.training.config import ConfigError

TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
COLUMN_PARALLEL = ("linear_qkv", "linear_fc1")


@dataclass(frozen=True)
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora_rank: must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"lora_alpha: must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"lora_dropout: must lie in [0, 1), got {self.dropout}")
        unknown = sorted(set(self.targets) - set(TARGETS))
        if unknown or not self.targets:
            raise ConfigError(f"lora_targets: {unknown or 'none given'} not among {', '.join(TARGETS)}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class LoRALinear(torch.nn.Module):
    """A frozen megatron Column/RowParallelLinear plus its adapter; returns (output, bias) as the base does."""

    def __init__(self, base: torch.nn.Module, name: str, column: bool, config: LoRAConfig, seed: int,
                 tp_rank: int, tp_size: int) -> None:
        super().__init__()
        self.base, self.name, self.column, self.scaling = base, name, column, config.scaling
        # fc1 of SwiGLU is strided: rank r holds [gate_r; up_r], and B's rows must follow the same layout
        self.stride = getattr(base.weight, "partition_stride", 1)
        self.dropout = torch.nn.Dropout(config.dropout)
        weight = base.weight
        full_a = initial_a(name, config.rank, base.input_size, seed)
        if column:
            a = full_a
            b = torch.zeros(base.output_size // tp_size, config.rank)
        else:
            width = base.input_size // tp_size
            a = full_a[:, tp_rank * width:(tp_rank + 1) * width]
            b = torch.zeros(base.output_size, config.rank)
        self.lora_A = torch.nn.Parameter(a.to(weight.device, weight.dtype).contiguous())
        self.lora_B = torch.nn.Parameter(b.to(weight.device, weight.dtype))
        # Which adapter halves are TP shards, for the global gradient norm (replicated ones count once).
        sharded = self.lora_B if column else self.lora_A
        set_tensor_model_parallel_attributes(sharded, True, 0 if column else 1, self.stride)

    def forward(self, x: torch.Tensor, *args, **kwargs):
        out, bias = self.base(x, *args, **kwargs)
        hidden = F.linear(self.dropout(x), self.lora_A)
        # The group is named explicitly: without it megatron warns, and the warning splits a compiled layer into
        # 17 graphs (1.21x slower LoRA steps on an H100, docs/benchmarks.md "Fine-tuning").
        region = copy_to_tensor_model_parallel_region if self.column else reduce_from_tensor_model_parallel_region
        hidden = region(hidden, group=self.base.tp_group)
        return out + F.linear(hidden, self.lora_B) * self.scaling, bias


def shard_rows(full: torch.Tensor, rank: int, size: int, stride: int = 1) -> torch.Tensor:
    """Rank `rank`'s rows of a column-parallel matrix, as megatron partitions it (stride 2: [gate_r; up_r])."""
    chunks = torch.chunk(full, size * stride, dim=0)
    return torch.cat([chunks[rank + size * s] for s in range(stride)], dim=0)


def gather_rows(shards: list[torch.Tensor], stride: int = 1) -> torch.Tensor:
    """The inverse of shard_rows: the whole matrix from every rank's rows, in rank order."""
    pieces = [torch.chunk(shard, stride, dim=0) for shard in shards]
    return torch.cat([piece[s] for s in range(stride) for piece in pieces], dim=0)


def initial_a(name: str, rank: int, in_features: int, seed: int) -> torch.Tensor:
    """PEFT's default A init (Kaiming-uniform, a=sqrt(5)) for the whole matrix, from a per-module seed."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") & (2**63 - 1))
    bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform_(a=sqrt(5)) on fan_in = in_features
    return (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound


def apply_lora(model: torch.nn.Module, config: LoRAConfig, seed: int, tp_rank: int = 0, tp_size: int = 1
               ) -> list[LoRALinear]:
    """Freeze every base parameter and wrap the target layers; returns the adapters in model order."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapters = []
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in config.targets and not isinstance(module, LoRALinear):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            adapter = LoRALinear(module, name, leaf in COLUMN_PARALLEL, config, seed, tp_rank, tp_size)
            setattr(parent, leaf, adapter)
            adapters.append(adapter)
    if not adapters:
        raise ValueError(f"no layer named {', '.join(config.targets)} in the model")
    return adapters


def adapters_of(model: torch.nn.Module) -> Iterator[LoRALinear]:
    return (m for m in model.modules() if isinstance(m, LoRALinear))


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's adapter tensors by module name: what a fine-tuning checkpoint holds (the base is referenced)."""
    out = {}
    for adapter in adapters_of(model):
        out[f"{adapter.name}.lora_A"] = adapter.lora_A.detach()
        out[f"{adapter.name}.lora_B"] = adapter.lora_B.detach()
    return out


def load_adapter_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    for adapter in adapters_of(model):
        adapter.lora_A.data.copy_(state[f"{adapter.name}.lora_A"])
        adapter.lora_B.data.copy_(state[f"{adapter.name}.lora_B"])


def trainable(parameters: Iterable[torch.nn.Parameter]) -> int:
    return sum(p.numel() for p in parameters if p.requires_grad)
