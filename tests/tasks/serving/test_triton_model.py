"""The embedded python-backend LLM model on a real Triton: LLM-API tensors, streaming, in-flight batching that
gives the same tokens as Hugging Face's own greedy generate, per-request LoRA adapters, errors, metrics."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tasks.serving import python_target
from tasks.serving.client import TritonError, generate
from tests.tasks.serving import models

PROMPTS = ["def add(a, b):", "The quick brown", "import os", "print(", "return a", "lazy dog", "fox", "sys"]


def hf_greedy(checkpoint: Path, prompt: str, max_tokens: int, adapter: Path | None = None) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def lora_adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.lora_adapter(tiny_llama, tmp_path_factory.mktemp("adapter"))


@pytest.fixture(scope="module")
def served(triton_server, tiny_llama, lora_adapter) -> str:
    repo = triton_server.repository
    with repo.writer():
        repo.add_adapter("support", lora_adapter, {"registered": "tiny-lora/1"})
        version = repo.add_version("llm", lambda d: python_target.populate(
            d, tiny_llama, adapters_index=repo.adapters_index, lineage={"registered": "tiny/1"}))
        repo.write_config("llm", python_target.config("llm", [version], registered_model="tiny",
                                                      registered_version="1"))
    triton_server.control.load("llm")
    triton_server.control.wait_ready("llm")
    return "llm"


def test_streams_hugging_face_greedy_output_piece_by_piece(triton_server, served, tiny_llama):
    result = generate(triton_server.grpc, served, PROMPTS[0], max_tokens=20, sampling_param_return_perf_metrics=True)
    assert result.text == hf_greedy(tiny_llama, PROMPTS[0], 20)
    assert len(result.token_times) > 5  # streamed: many responses, not one
    assert result.finish_reason in {"length", "stop"}
    ns = result.server_ns
    assert 0 < ns["arrival_time_ns"] <= ns["first_token_time_ns"] <= ns["last_token_time_ns"]


def test_non_streaming_answers_once_with_the_same_text(triton_server, served, tiny_llama):
    result = generate(triton_server.grpc, served, PROMPTS[1], max_tokens=12, streaming=False)
    assert result.text == hf_greedy(tiny_llama, PROMPTS[1], 12) and len(result.token_times) == 1


def test_concurrent_requests_batch_in_flight_and_each_gets_its_own_tokens(triton_server, served, tiny_llama):
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        results = list(pool.map(lambda p: generate(triton_server.grpc, served, p, max_tokens=16), PROMPTS))
    assert [r.text for r in results] == [hf_greedy(tiny_llama, p, 16) for p in PROMPTS]


def test_adapter_is_chosen_per_request_by_name_or_id(triton_server, served, tiny_llama, lora_adapter):
    expected = hf_greedy(tiny_llama, PROMPTS[2], 16, adapter=lora_adapter)
    assert expected != hf_greedy(tiny_llama, PROMPTS[2], 16)
    assert generate(triton_server.grpc, served, PROMPTS[2], max_tokens=16, lora_name="support").text == expected
    adapter_id = triton_server.repository.adapters()["support"]["id"]
    assert generate(triton_server.grpc, served, PROMPTS[2], max_tokens=16, lora_id=adapter_id).text == expected
    with ThreadPoolExecutor(2) as pool:  # base and adapter requests share one batch
        mixed = list(pool.map(lambda a: generate(triton_server.grpc, served, PROMPTS[2], max_tokens=16,
                                                 lora_name=a).text, ["support", ""]))
    assert mixed == [expected, hf_greedy(tiny_llama, PROMPTS[2], 16)]


def test_an_adapter_added_while_serving_is_used_without_reloading(triton_server, served, tiny_llama, lora_adapter):
    loads = triton_server.log.read_text().count("successfully loaded 'llm'")
    triton_server.repository.add_adapter("late", lora_adapter, {"registered": "tiny-lora/2"})
    text = generate(triton_server.grpc, served, PROMPTS[3], max_tokens=8, lora_name="late").text
    assert text == hf_greedy(tiny_llama, PROMPTS[3], 8, adapter=lora_adapter)
    assert triton_server.log.read_text().count("successfully loaded 'llm'") == loads


@pytest.mark.parametrize(("params", "message"), [
    ({"lora_name": "nope"}, "no deployed adapter 'nope'"),
    ({"sampling_param_top_p": 0.0}, "sampling_param_top_p must be in (0, 1]"),
    ({"lora_path": "/etc"}, "lora_path: give lora_name or lora_id"),
])
def test_a_bad_request_fails_alone_with_the_field_named(triton_server, served, params, message):
    with pytest.raises(TritonError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate(triton_server.grpc, served, "x", max_tokens=4, **params)
    assert generate(triton_server.grpc, served, "x", max_tokens=4).finish_reason  # the model still serves


def test_latency_histograms_and_token_counters_are_on_tritons_metrics_endpoint(triton_server, served):
    generate(triton_server.grpc, served, PROMPTS[4], max_tokens=6)
    metrics = urllib.request.urlopen(triton_server.metrics).read().decode()
    for family in ("llmops_llm_time_to_first_token_seconds_bucket", "llmops_llm_time_per_output_token_seconds_count",
                   "llmops_llm_output_tokens_total", "nv_inference_request_success"):
        assert family in metrics
    served_tokens = [line for line in metrics.splitlines() if line.startswith("llmops_llm_output_tokens_total{")]
    assert served_tokens and float(served_tokens[0].split()[-1]) >= 6
