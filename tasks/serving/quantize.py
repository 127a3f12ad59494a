"""The CPU int8 variant: dynamic int8 quantisation of the linear layers, gated by how much perplexity it costs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

INT8_DYNAMIC = "int8-dynamic"
# A held-out text for the gate: prose and code, as the sample corpus mixes them; not in any training set.
GATE_TEXT = (Path(__file__).resolve().parents[2] / "include" / "serving" / "perplexity_text.txt")


def quantize(model: Any, method: str | None) -> Any:
    """The model with its nn.Linear weights in int8 (activations quantised on the fly); None leaves it as is."""
    if method is None:
        return model
    if method != INT8_DYNAMIC:
        raise ValueError(f"quantization: {method!r} is not one of none, {INT8_DYNAMIC}")
    import torch

    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def perplexity(model: Any, ids: list[int]) -> float:
    """exp(mean next-token loss) over token ids, in non-overlapping windows of the model's context."""
    import torch

    window = int(model.config.max_position_embeddings)
    losses, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window):
            chunk = torch.tensor([ids[start:start + window]])
            if chunk.shape[1] < 2:
                break
            loss = model(input_ids=chunk, labels=chunk).loss
            losses += float(loss) * (chunk.shape[1] - 1)
            tokens += chunk.shape[1] - 1
    return math.exp(losses / tokens)


def perplexity_delta(checkpoint: Path, method: str, text: str | None = None) -> dict[str, float]:
    """fp32 and quantised perplexity on the gate text, and the relative change."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(checkpoint)(text or GATE_TEXT.read_text()).input_ids
    full = perplexity(AutoModelForCausalLM.from_pretrained(checkpoint).eval(), ids)
    quantised = perplexity(quantize(AutoModelForCausalLM.from_pretrained(checkpoint).eval(), method), ids)
    return {"perplexity_fp32": full, "perplexity_quantised": quantised, "delta": quantised / full - 1}


def check_quantization(checkpoint: Path, method: str, max_delta: float) -> float:
    """The relative perplexity rise of the quantised variant; ValueError if it is above max_delta."""
    gate = perplexity_delta(checkpoint, method)
    print(f"quantization {method}: perplexity {gate['perplexity_quantised']:.3f} vs fp32 {gate['perplexity_fp32']:.3f} "
          f"({gate['delta']:+.2%}) on {GATE_TEXT.name}", flush=True)
    if gate["delta"] > max_delta:
        raise ValueError(f"quantization {method}: perplexity rises {gate['delta']:.2%} on the gate text, more than "
                         f"the allowed {max_delta:.2%}; deploy unquantised or allow more with --max-perplexity-delta")
    return gate["delta"]
