"""Export a committed megatron-core checkpoint, whatever TP layout trained it, to a Hugging Face Llama checkpoint.

    python -m tasks.training.export --checkpoint CKPT_DIR --out HF_DIR [--tokenizer-dir DIR] [--dtype bfloat16]

Megatron fuses what Llama keeps apart: `linear_qkv` holds q, k and v interleaved per query group, and the SwiGLU's
`linear_fc1` holds gate above up. The split functions are pure and work on any tensor with those rows (a weight, or
a LoRA B matrix), so the adapter export maps its fused adapters with the same code as this full-model export.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from tasks.training.checkpoint import MANIFEST, CheckpointStore
from tasks.training.config import ModelConfig, ParallelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_checkpoint(path: Path | str) -> Path:
    """A committed `step-NNNNNNNN/` folder as given, else the newest committed one of a CheckpointStore root, else
    the most recently committed one of the stores one level down (an experiment's per-data-commit folders)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    committed = CheckpointStore(path).committed()
    if not committed and path.is_dir():
        nested = [c for store in sorted(path.iterdir()) if store.is_dir() for c in CheckpointStore(store).committed()]
        committed = sorted(nested, key=lambda c: (c.path / MANIFEST).stat().st_mtime)
    if not committed:
        raise FileNotFoundError(f"checkpoint: {path} is neither a committed checkpoint (no {MANIFEST}) nor a "
                                "checkpoint folder holding one; pass a step-NNNNNNNN folder that pre-training committed")
    return committed[-1].path


@contextmanager
def _one_rank_tp1() -> Iterator[None]:
    """A one-rank gloo group with megatron's TP=1 groups for the length of a load (reused if the caller has them).

    dist_checkpointing needs a process group even to read; at TP=1 it gathers every TP shard of the checkpoint.
    """
    import torch.distributed as dist
    from megatron.core import parallel_state

    from tasks.training import cpu_compat

    cpu_compat.apply()
    if dist.is_initialized() and dist.get_world_size() > 1:
        raise RuntimeError("load_full_state gathers a whole model into one process: call it outside a multi-rank "
                           f"job (this process is rank {dist.get_rank()} of {dist.get_world_size()})")
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    owns_parallel = not parallel_state.model_parallel_is_initialized()
    if owns_parallel:
        parallel_state.initialize_model_parallel()
    try:
        yield
    finally:
        if owns_parallel:
            parallel_state.destroy_model_parallel()
        if owns_group:
            dist.destroy_process_group()


def load_full_state(checkpoint_dir: Path | str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state_dict, manifest) of a committed checkpoint, gathered into one process as the TP=1 model's state.

    The keys are those of `build_gpt(model, ParallelConfig()).state_dict()` (so it loads strictly into that model);
    the model config is `ModelConfig(**manifest["config"]["model"])`. dist_checkpointing reshards on load, and
    megatron's MLP saves fc1 as global gate rows then global up rows, so linear_fc1 comes back as [gate; up] even
    from TP>1, where each rank held [gate_r; up_r]. Optimizer and RNG states are not read.
    """
    from megatron.core import dist_checkpointing

    from tasks.training.model import build_gpt

    path = resolve_checkpoint(checkpoint_dir)
    manifest = json.loads((path / MANIFEST).read_text())
    model_cfg = ModelConfig(**manifest["config"]["model"])
    with _one_rank_tp1(), torch.random.fork_rng(devices=[]):  # building initialises weights: keep the caller's RNG
        model = build_gpt(model_cfg, ParallelConfig())
        loaded = dist_checkpointing.load({"model": model.sharded_state_dict(prefix="model.")}, str(path))
        model.load_state_dict({k.removeprefix("model."): v for k, v in loaded["model"].items()}, strict=True)
    return model.state_dict(), manifest


def split_qkv(weight: torch.Tensor, model_cfg: ModelConfig,
              num_query_groups: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """megatron's linear_qkv rows -> (q, k, v) rows in Llama's q_proj / k_proj / v_proj order.

    megatron lays the rows out per query group: that group's query heads, then its key head, then its value head
    (SelfAttention.get_query_key_value_tensors). Concatenated TP shards keep that layout, since TP splits whole
    groups. num_query_groups defaults to one group per head, which is what `transformer_config` builds.
    """
    heads, head_dim = model_cfg.num_attention_heads, model_cfg.head_dim
    groups = num_query_groups or heads
    if heads % groups:
        raise ValueError(f"num_query_groups: {heads} attention heads are not divisible by {groups} groups")
    per_group = heads // groups
    expected = (heads + 2 * groups) * head_dim
    if weight.shape[0] != expected:
        raise ValueError(f"linear_qkv: {weight.shape[0]} rows, expected (heads {heads} + 2 x groups {groups}) x "
                         f"head_dim {head_dim} = {expected}; is this a full (TP-gathered) tensor of this model?")
    rest = weight.shape[1:]
    grouped = weight.reshape(groups, (per_group + 2) * head_dim, *rest)
    q, k, v = grouped.split([per_group * head_dim, head_dim, head_dim], dim=1)
    return q.reshape(-1, *rest).contiguous(), k.reshape(-1, *rest).contiguous(), v.reshape(-1, *rest).contiguous()


def split_gate_up(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """megatron's SwiGLU linear_fc1 rows -> (gate, up): the first half goes through SiLU, the second multiplies it.

    Expects the global layout that load_full_state returns; an all-gather of TP shards is [gate_0; up_0; gate_1;
    up_1; ...] instead and must be regrouped first.
    """
    if weight.shape[0] % 2:
        raise ValueError(f"linear_fc1: {weight.shape[0]} rows cannot be split into gate and up halves")
    gate, up = weight.chunk(2, dim=0)
    return gate.contiguous(), up.contiguous()


def hf_llama_weights(state_dict: dict[str, Any], model_cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The megatron TP=1 state as LlamaForCausalLM's state dict (same values, Llama's names and separate modules)."""
    weights = {k: v for k, v in state_dict.items() if not k.endswith("._extra_state")}
    hf = {"model.embed_tokens.weight": weights.pop("embedding.word_embeddings.weight"),
          "model.norm.weight": weights.pop("decoder.final_layernorm.weight"),
          "lm_head.weight": weights.pop("output_layer.weight")}
    for layer in range(model_cfg.num_layers):
        ours, theirs = f"decoder.layers.{layer}.", f"model.layers.{layer}."
        q, k, v = split_qkv(weights.pop(f"{ours}self_attention.linear_qkv.weight"), model_cfg)
        gate, up = split_gate_up(weights.pop(f"{ours}mlp.linear_fc1.weight"))
        hf |= {
            f"{theirs}input_layernorm.weight": weights.pop(f"{ours}input_layernorm.weight"),
            f"{theirs}self_attn.q_proj.weight": q,
            f"{theirs}self_attn.k_proj.weight": k,
            f"{theirs}self_attn.v_proj.weight": v,
            f"{theirs}self_attn.o_proj.weight": weights.pop(f"{ours}self_attention.linear_proj.weight"),
            f"{theirs}post_attention_layernorm.weight": weights.pop(f"{ours}pre_mlp_layernorm.weight"),
            f"{theirs}mlp.gate_proj.weight": gate,
            f"{theirs}mlp.up_proj.weight": up,
            f"{theirs}mlp.down_proj.weight": weights.pop(f"{ours}mlp.linear_fc2.weight"),
        }
    if weights:
        raise ValueError(f"state_dict: {len(weights)} tensors the Llama export does not map, e.g. "
                         f"{sorted(weights)[:3]}; merge LoRA adapters into the base before exporting")
    return hf


def llama_config(model_cfg: ModelConfig, tokenizer_dir: Path, dtype: torch.dtype):
    """LlamaConfig of the same function as megatron's model; the vocabulary is the preset's, not the tokenizer's."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig

    from tasks.training.model import transformer_config

    block = transformer_config(model_cfg, ParallelConfig(), torch.float32)
    special = json.loads((tokenizer_dir / "special_tokens_map.json").read_text())
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    token_id = {role: tokenizer.token_to_id(special[role]) for role in ("bos_token", "eos_token", "pad_token")}
    return LlamaConfig(
        architectures=["LlamaForCausalLM"],
        vocab_size=model_cfg.vocab_size,
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.ffn_hidden_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_attention_heads,
        num_key_value_heads=block.num_query_groups,
        head_dim=model_cfg.head_dim,
        hidden_act="silu",
        max_position_embeddings=model_cfg.seq_length,
        rms_norm_eps=block.layernorm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": float(model_cfg.rotary_base)},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=token_id["bos_token"],
        eos_token_id=token_id["eos_token"],
        pad_token_id=token_id["pad_token"],
        dtype=dtype,
    )


def to_hf_llama(state_dict: dict[str, Any], model_cfg: ModelConfig, tokenizer_dir: Path | str, out_dir: Path | str,
                dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json, model.safetensors and the tokenizer files into out_dir; returns out_dir.

    Written into a sibling folder and renamed into place, so a crashed export never looks like a finished one and
    a retry replaces it.
    """
    from safetensors.torch import save_file

    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    missing = [name for name in TOKENIZER_FILES if not (tokenizer_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"tokenizer_dir: {tokenizer_dir} lacks {missing}; pass the tokenizer/ folder that "
                                "curation published with the training data")
    weights = {name: tensor.detach().to(device="cpu", dtype=dtype).contiguous() for name, tensor in
               hf_llama_weights(state_dict, model_cfg).items()}
    partial = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    llama_config(model_cfg, tokenizer_dir, dtype).save_pretrained(partial)
    save_file(weights, str(partial / "model.safetensors"), metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, partial / name)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir


def fetch_tokenizer(repo: str, commit: str, destination: Path) -> Path:
    """The tokenizer files curation published with the data at `commit` (lakeFS endpoint from LAKECTL_*)."""
    from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo
    from tasks.training.data import TOKENIZED

    versioned = VersionedRepo(LakeFSEndpoint.from_env(), repo)
    for name in TOKENIZER_FILES:
        (destination / name).write_bytes(versioned.get_object(commit, f"{TOKENIZED}tokenizer/{name}"))
    return destination


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.training.export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="a committed step-NNNNNNNN folder, or a checkpoint folder (its newest committed step)")
    p.add_argument("--out", required=True, type=Path, help="the Hugging Face checkpoint folder to write (replaced)")
    p.add_argument("--tokenizer-dir", type=Path, default=None,
                   help="tokenizer files to ship (default: read from lakeFS at the checkpoint's data commit)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights' dtype (default: float32)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    began = time.perf_counter()
    state, manifest = load_full_state(args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as scratch:
        tokenizer_dir = args.tokenizer_dir or fetch_tokenizer(manifest["data_repo"], manifest["data_commit"],
                                                              Path(scratch))
        out = to_hf_llama(state, ModelConfig(**manifest["config"]["model"]), tokenizer_dir, args.out,
                          DTYPES[args.dtype])
    result = {"hf_dir": str(out.resolve()), "step": manifest["step"], "preset": manifest["config"]["model"]["preset"],
              "data_repo": manifest.get("data_repo"), "data_commit": manifest.get("data_commit"),
              "dtype": args.dtype, "seconds": round(time.perf_counter() - began, 1)}
    sys.stdout.write("export result " + json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
