"""LoRA on megatron-core: TP=2 computes what TP=1 computes (outputs, initial adapters, gradients), only adapters
train and the frozen base stays as it was (merging is checked against peft in test_finetune.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.training.config import ConfigError
from tasks.training.lora import LoRAConfig, gather_rows, shard_rows
from tests.stack.harness import REPO

PROBE = Path(__file__).with_name("lora_probe.py")


def probe(tmp_path: Path, ranks: int) -> dict:
    out = tmp_path / f"tp{ranks}.pt"
    launcher = [sys.executable] if ranks == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc-per-node={ranks}"]
    done = subprocess.run([*launcher, str(PROBE), str(out)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def tp1_tp2(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("lora")
    return probe(tmp, 1), probe(tmp, 2)


def test_tp2_output_equals_tp1_output_with_the_same_weights(tp1_tp2):
    one, two = tp1_tp2
    assert one["logits"].abs().max() > 0.1, "the probe must produce non-trivial logits"
    torch.testing.assert_close(two["logits"], one["logits"], rtol=1e-5, atol=1e-5)


def test_the_same_seed_gives_the_same_adapters_whatever_the_tp_size(tp1_tp2):
    one, two = tp1_tp2
    assert one["initial_A"].keys() == two["initial_A"].keys() and len(one["initial_A"]) == 16
    for name, a in one["initial_A"].items():
        torch.testing.assert_close(two["initial_A"][name], a, rtol=1e-6, atol=1e-8, msg=name)
    firsts = [a[0, 0].item() for a in one["initial_A"].values()]
    assert len(set(firsts)) == len(firsts), "each module draws its own adapter"


def test_gradients_of_the_adapters_agree_across_tp_sizes(tp1_tp2):
    one, two = tp1_tp2
    for name, grads in one["grads"].items():
        for mine, reference in zip(two["grads"][name], grads, strict=True):
            # fp32 sums in another order: differences are relative to the gradient's scale, not to each element
            scale = reference.abs().max().item()
            assert scale > 0, name
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6 * scale, msg=name)


def test_only_adapters_get_gradients_and_the_frozen_base_is_unchanged_after_a_step(tp1_tp2):
    for result in tp1_tp2:
        assert result["with_grad"] and all(n.endswith((".lora_A", ".lora_B")) for n in result["with_grad"])
        assert len(result["with_grad"]) == 2 * result["adapters"]
        assert result["base_unchanged"]


def test_strided_rows_round_trip_like_megatrons_swiglu_partition():
    full = torch.arange(16.0).view(8, 2)  # rows 0-3 gate, 4-7 up
    shards = [shard_rows(full, rank, 2, stride=2) for rank in range(2)]
    assert shards[0][:, 0].tolist() == [0, 2, 8, 10]  # [gate_0; up_0]
    assert torch.equal(gather_rows(shards, stride=2), full)


@pytest.mark.parametrize(("config", "param"), [
    (dict(rank=0), "lora_rank"), (dict(alpha=0), "lora_alpha"), (dict(dropout=1.0), "lora_dropout"),
    (dict(targets=("linear_qkv", "q_proj")), "lora_targets"),
])
def test_bad_lora_settings_name_the_param(config, param):
    with pytest.raises(ConfigError, match=f"^{param}: "):
        LoRAConfig(**config)
