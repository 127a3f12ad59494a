"""The int8 CPU variant: real dynamic quantisation, its perplexity measured against fp32, and the gate on it."""

from __future__ import annotations

import pytest

from tasks.serving.quantize import check_quantization, perplexity, perplexity_delta, quantize


def test_int8_linears_change_the_logits_a_little_and_perplexity_is_measured(tiny_llama):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    quantised = quantize(AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), "int8-dynamic")
    assert quantize(model, None) is model
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in quantised.modules())
    ids = AutoTokenizer.from_pretrained(tiny_llama)("def add(a, b):", return_tensors="pt").input_ids
    with torch.inference_mode():
        full, small = model(input_ids=ids).logits, quantised(input_ids=ids).logits
    assert 0 < (full - small).abs().max() < 0.1 * full.abs().max()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    assert perplexity(model, tokenizer("The quick brown fox jumps over the lazy dog. " * 10).input_ids) > 1


def test_the_gate_passes_a_small_rise_and_refuses_one_above_the_limit(tiny_llama):
    delta = perplexity_delta(tiny_llama, "int8-dynamic")["delta"]
    assert abs(delta) < 0.05
    assert check_quantization(tiny_llama, "int8-dynamic", max_delta=abs(delta) + 0.01) == pytest.approx(delta)
    with pytest.raises(ValueError, match="perplexity rises .* more than the allowed"):
        check_quantization(tiny_llama, "int8-dynamic", max_delta=delta - 0.01)


def test_an_unknown_method_is_refused_by_name(tiny_llama):
    with pytest.raises(ValueError, match="'int4' is not one of none, int8-dynamic"):
        quantize(object(), "int4")
