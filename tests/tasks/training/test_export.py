"""The Hugging Face export computes megatron's function: the q/k/v and gate/up splits agree with megatron's own
forward code, transformers' logits equal megatron's (TP=1) on the same tokens, and a TP=2-trained checkpoint gathers
into the layout its two ranks computed with."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tasks.training import distributed
from tasks.training.config import ModelConfig, ParallelConfig, model_preset
from tasks.training.export import hf_llama_weights, load_full_state, split_gate_up, split_qkv, to_hf_llama
from tasks.training.model import build_gpt, layer_spec, transformer_config

REPO = Path(__file__).resolve().parents[3]
MODEL = model_preset("tiny", seq_length=32)
SMALL = ModelConfig("small", num_layers=1, hidden_size=64, num_attention_heads=4, ffn_hidden_size=96, vocab_size=100,
                    seq_length=8)
LOGIT_BOUND = 1e-4  # fp32, same weights: only summation order differs (measured ~1e-5)


@pytest.fixture(scope="module")
def runtime():
    warnings.filterwarnings("ignore", category=UserWarning)
    rt = distributed.init(ParallelConfig(), seed=1)
    yield rt
    distributed.shutdown()


def fixed_tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, MODEL.seq_length), generator=torch.Generator().manual_seed(5))


@torch.no_grad()
def megatron_logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """[b, s, vocab] logits of megatron's GPT (no labels: it returns logits batch-first)."""
    model.eval()
    return model(ids, torch.arange(ids.size(1)).expand_as(ids), None)


@torch.no_grad()
def hf_logits(hf_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    return hf(input_ids=ids).logits


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real curation tokenizer, smaller than the preset's vocabulary (as the sample corpus's is)."""
    from tasks.curation.tokenize import save_tokenizer, train_tokenizer

    texts = [f"def function_{i}(x):\n    return x * {i} + {i % 7}  # document {i}" for i in range(300)]
    return save_tokenizer(train_tokenizer(texts, 500), tmp_path_factory.mktemp("tokenizer"))


def test_split_qkv_gives_the_query_key_value_megatron_attention_computes(runtime):
    from megatron.core.transformer.attention import SelfAttention
    from megatron.core.transformer.enums import AttnMaskType

    for groups in (4, 2):  # MHA as our presets build it, and GQA
        config = replace(transformer_config(SMALL, ParallelConfig(), torch.float32), num_query_groups=groups)
        attention = SelfAttention(config, layer_spec().submodules.self_attention.submodules, layer_number=1,
                                  attn_mask_type=AttnMaskType.causal)
        hidden = torch.randn(8, 2, 64)
        query, key, value = attention.get_query_key_value_tensors(hidden)
        q, k, v = split_qkv(attention.linear_qkv.weight.detach(), SMALL, groups)
        assert q.shape == (4 * 16, 64) and k.shape == v.shape == (groups * 16, 64)
        for ours, theirs in ((q, query), (k, key), (v, value)):
            torch.testing.assert_close((hidden @ ours.t()).view(theirs.shape), theirs)


def test_split_qkv_refuses_a_shard():
    with pytest.raises(ValueError, match="TP-gathered"):
        split_qkv(torch.zeros(3 * MODEL.hidden_size // 2, MODEL.hidden_size), MODEL)


def test_split_gate_up_gives_megatrons_swiglu(runtime):
    from megatron.core.transformer.mlp import MLP

    mlp = MLP(transformer_config(SMALL, ParallelConfig(), torch.float32), layer_spec().submodules.mlp.submodules)
    hidden = torch.randn(8, 2, 64)
    gate, up = split_gate_up(mlp.linear_fc1.weight.detach())
    expected, _ = mlp(hidden)
    ours = (F.silu(hidden @ gate.t()) * (hidden @ up.t())) @ mlp.linear_fc2.weight.detach().t()
    torch.testing.assert_close(ours, expected)
    swapped = (F.silu(hidden @ up.t()) * (hidden @ gate.t())) @ mlp.linear_fc2.weight.detach().t()
    assert not torch.allclose(swapped, expected), "the check must tell gate from up"


def test_unmapped_tensors_are_refused(runtime):
    state = build_gpt(MODEL, ParallelConfig()).state_dict()
    state["decoder.layers.0.self_attention.linear_qkv.lora_A.weight"] = torch.zeros(4, MODEL.hidden_size)
    with pytest.raises(ValueError, match="merge LoRA adapters"):
        hf_llama_weights(state, MODEL)


def test_export_of_a_megatron_model_gives_its_logits_in_transformers(runtime, tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    torch.manual_seed(11)
    model = build_gpt(MODEL, ParallelConfig())
    out = to_hf_llama(model.state_dict(), MODEL, tokenizer_dir, tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                                     "tokenizer.json", "tokenizer_config.json"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tokenizer("def function_3(x):\n    return x * 3")["input_ids"]])
    assert tokenizer.decode(ids[0]) == "def function_3(x):\n    return x * 3"
    ours, theirs = hf_logits(out, ids), megatron_logits(model, ids)
    assert theirs.shape == ours.shape == (1, ids.size(1), MODEL.vocab_size)  # the preset's vocab, not the tokenizer's
    difference = float((ours - theirs).abs().max())
    print(f"fresh model: max |HF - megatron| logit difference {difference:.2e}")
    assert difference < LOGIT_BOUND


def test_bfloat16_export_loads_as_bfloat16(runtime, tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = to_hf_llama(build_gpt(MODEL, ParallelConfig()).state_dict(), MODEL, tokenizer_dir, tmp_path / "hf",
                      torch.bfloat16)
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.dtype == torch.bfloat16 and hf.config.vocab_size == MODEL.vocab_size


# --- trained checkpoints (the pre-training CLI on CPU, TP=1 and TP=2 under torchrun) -----------------------------

@pytest.fixture(scope="module")
def corpus(lakefs_endpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.tasks.training.corpus import publish_tokenized

    return publish_tokenized(lakefs_endpoint, "export-run", tmp_path_factory.mktemp("tokenized"))


def child_env(endpoint) -> dict[str, str]:
    return {**os.environ, **endpoint.to_env(), "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore",
            "MLFLOW_TRACKING_URI": ""}


def pretrain(endpoint, checkpoints: Path, cache: Path, ranks: int) -> None:
    launcher = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    done = subprocess.run(
        [*launcher, "-m", "tasks.training.pretrain", "run", "--repo", "export-run", "--preset", "tiny",
         "--seq-length", "32", "--steps", "4", "--micro-batch-size", "4", "--global-batch-size", "4",
         "--checkpoint-interval", "4", "--eval-interval", "4", "--eval-batches", "1", "--lr", "1e-2",
         "--tensor-parallel", str(ranks), "--checkpoint-dir", str(checkpoints), "--cache-dir", str(cache)],
        env=child_env(endpoint), cwd=REPO, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.slow
def test_tp1_trained_checkpoint_exports_to_megatrons_logits(runtime, lakefs_endpoint, corpus, tokenizer_dir,
                                                             tmp_path):
    pretrain(lakefs_endpoint, tmp_path / "ck", tmp_path / "cache", ranks=1)
    state, manifest = load_full_state(tmp_path / "ck")  # the store's folder: its newest committed step
    assert manifest["step"] == 4 and manifest["parallel"]["tensor_parallel"] == 1
    model_cfg = ModelConfig(**manifest["config"]["model"])
    model = build_gpt(model_cfg, ParallelConfig())
    model.load_state_dict(state, strict=True)
    fresh = build_gpt(model_cfg, ParallelConfig()).state_dict()
    assert not torch.equal(state["output_layer.weight"], fresh["output_layer.weight"]), "nothing was loaded"
    ids = fixed_tokens(2000)
    out = to_hf_llama(state, model_cfg, tokenizer_dir, tmp_path / "hf")
    difference = float((hf_logits(out, ids) - megatron_logits(model, ids)).abs().max())
    print(f"TP=1 checkpoint: max |HF - megatron| logit difference {difference:.2e}")
    assert difference < LOGIT_BOUND


@pytest.mark.slow
def test_tp2_trained_checkpoint_exports_to_the_logits_its_two_ranks_compute(lakefs_endpoint, corpus, tmp_path):
    pretrain(lakefs_endpoint, tmp_path / "ck", tmp_path / "cache", ranks=2)
    step = tmp_path / "ck" / "step-00000004"
    ids = fixed_tokens(2000)
    torch.save(ids, tmp_path / "ids.pt")
    ranks = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__, str(step),
         str(tmp_path / "ids.pt"), str(tmp_path / "tp2_logits.pt")],
        env=child_env(lakefs_endpoint), cwd=REPO, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    exported = subprocess.run(  # the CLI, in its own process; the tokenizer comes from lakeFS at the data commit
        [sys.executable, "-m", "tasks.training.export", "--checkpoint", str(step), "--out", str(tmp_path / "hf")],
        env=child_env(lakefs_endpoint), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    assert f'"data_commit": "{corpus}"' in exported.stdout

    tp2 = torch.load(tmp_path / "tp2_logits.pt")
    hf = hf_logits(tmp_path / "hf", ids)
    state, manifest = load_full_state(step)  # in this process (no process group of its own)
    model = build_gpt(ModelConfig(**manifest["config"]["model"]), ParallelConfig())
    model.load_state_dict(state, strict=True)
    tp1 = megatron_logits(model, ids)
    hf_vs_tp2, tp1_vs_tp2 = float((hf - tp2).abs().max()), float((tp1 - tp2).abs().max())
    print(f"TP=2 checkpoint: max |HF - megatron TP=2| {hf_vs_tp2:.2e}, max |megatron TP=1 - TP=2| {tp1_vs_tp2:.2e}, "
          f"max |HF - megatron TP=1| {float((hf - tp1).abs().max()):.2e}")
    assert hf_vs_tp2 < LOGIT_BOUND and tp1_vs_tp2 < LOGIT_BOUND


def _tp2_logits(step: Path, ids_file: Path, out: Path) -> None:
    """Worker (one of two torchrun ranks): the checkpoint loaded at TP=2, as trained; rank 0 saves full logits."""
    import json

    from megatron.core import dist_checkpointing
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    parallel = ParallelConfig(tensor_parallel=2)
    runtime = distributed.init(parallel, seed=1)
    model = build_gpt(ModelConfig(**json.loads((step / "manifest.json").read_text())["config"]["model"]), parallel)
    loaded = dist_checkpointing.load({"model": model.sharded_state_dict(prefix="model.")}, str(step))
    model.load_state_dict({k.removeprefix("model."): v for k, v in loaded["model"].items()}, strict=True)
    with torch.no_grad():
        logits = gather_from_tensor_model_parallel_region(megatron_logits(model, torch.load(ids_file)))
    if runtime.is_main:
        torch.save(logits, out)
    distributed.shutdown()


if __name__ == "__main__":
    _tp2_logits(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
