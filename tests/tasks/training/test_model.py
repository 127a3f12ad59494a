"""The GPT's perf paths keep its function: the TP=1 loss equals megatron's, a layer compiles as one graph, the foreach
clipping equals per-parameter clipping, and TP=2 (gloo, two processes) gives TP=1's loss."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tasks.training import distributed
from tasks.training.config import ParallelConfig, model_preset
from tasks.training.model import GroupedRowParallelLinear, build_gpt, clip_grad_norm_foreach, token_cross_entropy

REPO = Path(__file__).resolve().parents[3]
MODEL = model_preset("tiny", seq_length=32)


@pytest.fixture(scope="module")
def runtime():
    warnings.filterwarnings("ignore", category=UserWarning)
    rt = distributed.init(ParallelConfig(), seed=1)
    yield rt
    distributed.shutdown()


def tokens(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, MODEL.vocab_size, (2, MODEL.seq_length), generator=torch.Generator().manual_seed(seed))
    return ids, torch.arange(MODEL.seq_length).expand(2, -1)


def test_tp1_loss_equals_megatrons_vocab_parallel_cross_entropy(runtime):
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    logits = torch.randn(MODEL.seq_length, 2, MODEL.vocab_size)
    labels = torch.randint(0, MODEL.vocab_size, (2, MODEL.seq_length))
    ours = token_cross_entropy(logits, labels)
    reference = vocab_parallel_cross_entropy(logits.clone(), labels.t().contiguous()).t()
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_layer_compiles_as_one_graph(runtime):
    model = build_gpt(MODEL, ParallelConfig())
    assert isinstance(model.decoder.layers[0].mlp.linear_fc2, GroupedRowParallelLinear)
    hidden = torch.randn(MODEL.seq_length, 2, MODEL.hidden_size)
    explained = torch._dynamo.explain(model.decoder.layers[0])(
        hidden, attention_mask=None, rotary_pos_emb=model.rotary_pos_emb(MODEL.seq_length))
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


def test_foreach_clipping_matches_the_plain_global_norm_and_clips_to_it(runtime):
    torch.manual_seed(3)
    model = build_gpt(MODEL, ParallelConfig())
    ids, positions = tokens(0)
    model(ids, positions, None, labels=ids).mean().backward()
    before = [p.grad.clone() for p in model.parameters()]
    expected = torch.sqrt(sum(g.double().pow(2).sum() for g in before)).item()  # TP=1: every parameter owned
    norm = float(clip_grad_norm_foreach(model, 0.5, runtime.tp_group))
    assert norm == pytest.approx(expected, rel=1e-4) and norm > 0.5  # fp32 sums vs a float64 reference
    for clipped, original in zip((p.grad for p in model.parameters()), before, strict=True):
        torch.testing.assert_close(clipped, original * (0.5 / (norm + 1e-6)), rtol=1e-4, atol=1e-7)


def _loss_on_this_rank(tensor_parallel: int) -> float:
    """Worker: the tiny GPT's mean loss on fixed tokens, under TP=tensor_parallel."""
    distributed.init(ParallelConfig(tensor_parallel=tensor_parallel), seed=1)
    torch.manual_seed(3)
    model = build_gpt(MODEL, ParallelConfig(tensor_parallel=tensor_parallel))
    ids, positions = tokens(0)
    return float(model(ids, positions, None, labels=ids).mean())


def test_tp2_loss_equals_tp1(runtime, tmp_path):
    out = tmp_path / "loss"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    __file__, str(out)], cwd=REPO, check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"})
    torch.manual_seed(3)
    ids, positions = tokens(0)
    tp1 = float(build_gpt(MODEL, ParallelConfig())(ids, positions, None, labels=ids).mean())
    assert float(out.read_text()) == pytest.approx(tp1, abs=1e-5)


if __name__ == "__main__":
    loss = _loss_on_this_rank(tensor_parallel=2)
    if int(os.environ["RANK"]) == 0:
        Path(sys.argv[1]).write_text(str(loss))
