"""LoRA adapters out of megatron-core: gathered over TP, mapped onto Hugging Face's modules, saved in PEFT's format,
or merged into the base weights.

megatron fuses q/k/v into linear_qkv and gate/up into linear_fc1; Hugging Face's Llama keeps them apart. One
adapter on a fused layer is exactly one adapter per separate module with the same A and B's rows split the way the
weight's rows split (export.split_qkv / split_gate_up), so `peft` computes what our model computes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tasks.training.config import ModelConfig
from tasks.training.export import split_gate_up, split_qkv
from tasks.training.lora import LoRAConfig, adapters_of, gather_rows

# megatron module -> the Hugging Face Llama modules it holds
HF_MODULES = {"linear_qkv": ("q_proj", "k_proj", "v_proj"), "linear_proj": ("o_proj",),
              "linear_fc1": ("gate_proj", "up_proj"), "linear_fc2": ("down_proj",)}
HF_PARENT = {"linear_qkv": "self_attn", "linear_proj": "self_attn", "linear_fc1": "mlp", "linear_fc2": "mlp"}


def gather_adapters(model: torch.nn.Module, tp_group: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Collective over the TP group: every adapter as whole (A, B) matrices in fp32, keyed by its module name."""
    def everyone(tensor: torch.Tensor) -> list[torch.Tensor]:
        if not dist.is_initialized() or dist.get_world_size(tp_group) == 1:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(tp_group))]
        dist.all_gather(parts, tensor.contiguous(), group=tp_group)
        return parts

    whole = {}
    for adapter in adapters_of(model):
        a, b = adapter.lora_A.detach().float(), adapter.lora_B.detach().float()
        if adapter.column:
            whole[adapter.name] = (a.cpu(), gather_rows(everyone(b), adapter.stride).cpu())
        else:
            whole[adapter.name] = (torch.cat(everyone(a), dim=1).cpu(), b.cpu())
    return whole


def peft_state(adapters: dict[str, tuple[torch.Tensor, torch.Tensor]], model_cfg: ModelConfig
               ) -> dict[str, torch.Tensor]:
    """PEFT's tensor names on LlamaForCausalLM for our adapters (fused ones split, A shared)."""
    out = {}
    for name, (a, b) in adapters.items():
        layer, leaf = name.split(".")[2], name.rsplit(".", 1)[-1]
        if leaf == "linear_qkv":
            parts = split_qkv(b, model_cfg)
        elif leaf == "linear_fc1":
            parts = split_gate_up(b)
        else:
            parts = (b,)
        for module, part in zip(HF_MODULES[leaf], parts, strict=True):
            prefix = f"base_model.model.model.layers.{layer}.{HF_PARENT[leaf]}.{module}"
            out[f"{prefix}.lora_A.weight"] = a.clone()  # one tensor per module: safetensors refuses shared storage
            out[f"{prefix}.lora_B.weight"] = part.contiguous()
    return out


def save_peft_adapter(adapters: dict[str, tuple[torch.Tensor, torch.Tensor]], model_cfg: ModelConfig,
                      config: LoRAConfig, base_dir: str, out_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """adapter_config.json + adapter_model.safetensors that `peft.PeftModel.from_pretrained(base, out_dir)` loads;
    written beside and renamed into place, so a crash never leaves a half adapter."""
    from safetensors.torch import save_file

    targets = sorted({m for leaf in config.targets for m in HF_MODULES[leaf]})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_dir, "r": config.rank,
        "lora_alpha": config.alpha, "lora_dropout": config.dropout, "target_modules": targets, "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "init_lora_weights": True, "inference_mode": True,
    }
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
    weights = {k: v.to(dtype) for k, v in peft_state(adapters, model_cfg).items()}
    save_file(weights, str(partial / "adapter_model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


def merge_into(state: dict[str, torch.Tensor], adapters: dict[str, tuple[torch.Tensor, torch.Tensor]],
               scaling: float) -> dict[str, torch.Tensor]:
    """The base's TP=1 state with every adapter folded in: W + scaling * B A, computed in fp32, cast back."""
    merged = dict(state)
    for name, (a, b) in adapters.items():
        key = f"{name}.weight"
        weight = merged[key]
        merged[key] = (weight.float() + scaling * (b @ a)).to(weight.dtype)
    return merged
