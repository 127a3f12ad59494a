"""Training configuration, one small validated object per concern, so a bad value fails before any work.

Every check raises `ConfigError` naming the Param (the DAG's Params and the CLI flags share these names) and the rule.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A setting breaks a rule; the message names the Param and the rule."""


def _require(condition: bool, param: str, rule: str) -> None:
    if not condition:
        raise ConfigError(f"{param}: {rule}")


@dataclass(frozen=True)
class ModelConfig:
    """A Llama-style GPT: RMSNorm, SwiGLU, RoPE, no biases, untied input/output embeddings."""

    preset: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int
    vocab_size: int
    seq_length: int
    rotary_base: int = 10000

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "vocab_size", "seq_length"):
            _require(getattr(self, field) >= 1, field, f"must be >= 1, got {getattr(self, field)}")
        _require(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
                 f"{self.hidden_size} must be divisible by num_attention_heads {self.num_attention_heads}")
        _require((self.hidden_size // self.num_attention_heads) % 2 == 0, "hidden_size",
                 "the head size must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def matmul_params(self) -> int:
        """Parameters that take part in matmuls per token (everything but norms and the input embedding lookup)."""
        h, f = self.hidden_size, self.ffn_hidden_size
        per_layer = 4 * h * h + 3 * h * f  # QKV + output projection; SwiGLU gate, up, down
        return self.num_layers * per_layer + h * self.vocab_size  # + output layer

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 N (forward + backward of the matmuls) + 12 L h s (attention scores and values)."""
        return 6.0 * self.matmul_params() + 12.0 * self.num_layers * self.hidden_size * self.seq_length


PRESETS: dict[str, dict[str, int]] = {
    # trains meaningfully on 2 CPU cores in a few minutes; the main job's model
    "tiny": dict(num_layers=4, hidden_size=128, num_attention_heads=4, ffn_hidden_size=352, seq_length=128),
    "125m": dict(num_layers=12, hidden_size=768, num_attention_heads=12, ffn_hidden_size=2048, seq_length=1024),
    "1b": dict(num_layers=24, hidden_size=2048, num_attention_heads=16, ffn_hidden_size=5632, seq_length=2048),
}
PRESET_VOCAB = {"tiny": 8000, "125m": 32000, "1b": 32000}


def model_preset(name: str, seq_length: int | None = None) -> ModelConfig:
    """A preset's architecture and vocabulary (the data's tokenizer must fit in it); seq_length may be shortened."""
    _require(name in PRESETS, "preset", f"{name!r} is not one of {', '.join(PRESETS)}")
    shape = dict(PRESETS[name])
    if seq_length:
        shape["seq_length"] = seq_length
    return ModelConfig(preset=name, vocab_size=PRESET_VOCAB[name], **shape)


@dataclass(frozen=True)
class ParallelConfig:
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    data_parallel: int = 1

    def __post_init__(self) -> None:
        for field in ("tensor_parallel", "pipeline_parallel", "data_parallel"):
            _require(getattr(self, field) >= 1, field, f"must be >= 1, got {getattr(self, field)}")

    @property
    def world_size(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel * self.data_parallel

    def check_model(self, model: ModelConfig) -> None:
        tp, pp = self.tensor_parallel, self.pipeline_parallel
        _require(model.num_attention_heads % tp == 0, "tensor_parallel",
                 f"{model.num_attention_heads} attention heads of preset {model.preset} are not divisible by {tp}")
        _require(model.ffn_hidden_size % tp == 0, "tensor_parallel",
                 f"FFN size {model.ffn_hidden_size} of preset {model.preset} is not divisible by {tp}")
        _require(model.num_layers % pp == 0, "pipeline_parallel",
                 f"{model.num_layers} layers of preset {model.preset} are not divisible by {pp}")
        _require(pp == 1, "pipeline_parallel",
                 "this trainer runs pipeline_parallel=1 (TP and DP are supported); pipeline schedules are not wired yet")

    def check_world(self, world_size: int) -> None:
        _require(world_size == self.world_size, "data_parallel",
                 f"world size {world_size} != tensor_parallel {self.tensor_parallel} x pipeline_parallel "
                 f"{self.pipeline_parallel} x data_parallel {self.data_parallel}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to min_lr."""

    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 10
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _require(0 <= self.min_lr <= self.lr, "min_lr", f"must lie in [0, lr={self.lr}], got {self.min_lr}")
        _require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.grad_clip >= 0, "grad_clip", f"must be >= 0 (0 = off), got {self.grad_clip}")


@dataclass(frozen=True)
class BatchConfig:
    steps: int
    micro_batch_size: int
    global_batch_size: int
    seed: int = 1234
    eval_interval: int = 25
    eval_batches: int = 4

    def __post_init__(self) -> None:
        for field in ("steps", "micro_batch_size", "global_batch_size", "eval_interval", "eval_batches"):
            _require(getattr(self, field) >= 1, field, f"must be >= 1, got {getattr(self, field)}")

    def check_parallel(self, parallel: ParallelConfig) -> None:
        per_step = self.micro_batch_size * parallel.data_parallel
        _require(self.global_batch_size % per_step == 0, "global_batch_size",
                 f"{self.global_batch_size} is not divisible by micro_batch_size {self.micro_batch_size} x "
                 f"data_parallel {parallel.data_parallel} = {per_step}")

    def accumulation_steps(self, parallel: ParallelConfig) -> int:
        return self.global_batch_size // (self.micro_batch_size * parallel.data_parallel)


@dataclass(frozen=True)
class CheckpointConfig:
    """Where checkpoints go, how often, how many stay; resume_policy: auto (latest usable) or restart."""

    directory: str
    interval: int = 50
    keep: int = 2
    resume_policy: str = "auto"

    def __post_init__(self) -> None:
        _require(bool(self.directory), "checkpoint_dir", "must be set")
        _require(self.interval >= 1, "checkpoint_interval", f"must be >= 1, got {self.interval}")
        _require(self.keep >= 1, "checkpoint_keep", f"must be >= 1, got {self.keep}")
        _require(self.resume_policy in ("auto", "restart"), "resume_policy",
                 f"{self.resume_policy!r} is not one of auto, restart")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    parallel: ParallelConfig
    optim: OptimConfig
    batch: BatchConfig
    checkpoint: CheckpointConfig

    def __post_init__(self) -> None:
        self.parallel.check_model(self.model)
        self.batch.check_parallel(self.parallel)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self)}

    def compatibility_hash(self, extra: dict[str, Any] | None = None) -> str:
        """What a checkpoint must share with the run resuming it: the model, the parallel layout, the data order
        (and `extra`, e.g. fine-tuning's base checkpoint and adapter shape)."""
        keyed = {"model": asdict(self.model), "parallel": asdict(self.parallel),
                 "micro_batch_size": self.batch.micro_batch_size, "global_batch_size": self.batch.global_batch_size,
                 "seed": self.batch.seed, **(extra or {})}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
