"""Deploying on a real Triton: a candidate next to the serving version, gates, promotion without a failed request,
and a broken candidate rolled back while the old version keeps answering."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tasks.serving import build, python_target
from tasks.serving.client import TritonError, generate
from tasks.serving.deploy import (
    GateFailed,
    Target,
    latency_gate,
    promote,
    smoke_test,
    stage_candidate,
    unload_candidate,
)


def other_llama(tiny_llama: Path, out: Path, seed: int) -> Path:
    """The same architecture and tokenizer with other weights: a new model version that answers differently."""
    import shutil

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(AutoConfig.from_pretrained(tiny_llama)).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_llama / name).exists():
            shutil.copy2(tiny_llama / name, out / name)
    return out


def add_version(target: Target, checkpoint: Path, registered_version: str) -> int:
    repo = target.repository
    reference = build.reference_generation(checkpoint, {})

    def populate(version_dir: Path) -> None:
        python_target.populate(version_dir, checkpoint, adapters_index=repo.adapters_index,
                               lineage={"registered_model": "tiny", "registered_version": registered_version})
        (version_dir / "reference.json").write_text(json.dumps(reference))

    with repo.writer():
        return repo.add_version(target.served_name, populate)


@pytest.fixture(scope="module")
def target(triton_server) -> Target:
    return Target(triton_server.repository, triton_server.control, triton_server.grpc, served_name="chat")


@pytest.fixture(scope="module")
def serving_v1(target, tiny_llama) -> int:
    version = add_version(target, tiny_llama, "1")
    stage_candidate(target, version)
    smoke_test(target, version)
    assert promote(target, version) is None  # nothing served before
    return version


def test_first_deploy_serves_the_version_under_the_stable_name(target, serving_v1, tiny_llama):
    assert target.serving_version() == serving_v1
    assert generate(target.grpc_url, "chat", build.REFERENCE_PROMPT, max_tokens=build.REFERENCE_TOKENS).text == \
        build.reference_generation(tiny_llama, {})["base"]
    assert not target.control.ready(target.candidate_name)  # the candidate is gone once promoted
    assert 'string_value: "1"' in target.repository.read_config("chat")  # lineage: the registered version served


def test_promotion_under_load_fails_no_request(target, serving_v1, tiny_llama, tmp_path):
    new = add_version(target, other_llama(tiny_llama, tmp_path / "v2", seed=7), "2")
    failures: list[Exception] = []
    answers: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answers.append(generate(target.grpc_url, "chat", build.REFERENCE_PROMPT,
                                        max_tokens=build.REFERENCE_TOKENS).text)
            except Exception as error:  # noqa: BLE001 - every kind of failure counts
                failures.append(error)

    clients = [threading.Thread(target=client) for _ in range(3)]
    for thread in clients:
        thread.start()
    try:
        stage_candidate(target, new)
        smoke_test(target, new)
        latency_gate(target, {"max_ttft_ms": 10_000})
        assert promote(target, new) == serving_v1
        after = len(answers)
        while len(answers) < after + 6:
            stop.wait(0.05)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert failures == []
    new_answer = build.reference_generation(tmp_path / "v2", {})["base"]
    assert answers[-1] == new_answer != answers[0]  # served by v1 before, by v2 after
    assert target.serving_version() == new


def test_a_candidate_failing_its_gate_is_rolled_back_and_the_old_version_keeps_answering(target, serving_v1,
                                                                                          tiny_llama, tmp_path):
    serving = target.serving_version()
    config_before = target.repository.read_config("chat")
    before = generate(target.grpc_url, "chat", "def ", max_tokens=8).text
    candidate = add_version(target, other_llama(tiny_llama, tmp_path / "slow", seed=11), "3")
    stage_candidate(target, candidate)
    with pytest.raises(GateFailed, match="min_tokens_per_s"):
        latency_gate(target, {"min_tokens_per_s": 1e9})
    unload_candidate(target)
    assert target.serving_version() == serving and target.repository.read_config("chat") == config_before
    assert generate(target.grpc_url, "chat", "def ", max_tokens=8).text == before
    assert not target.control.ready(target.candidate_name)


def test_a_candidate_that_cannot_load_leaves_the_serving_version_untouched(target, serving_v1, tiny_llama, tmp_path):
    serving = target.serving_version()
    broken = add_version(target, tiny_llama, "4")
    (target.repository.version_dir("chat", broken) / "hf" / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(TritonError, match="chat-candidate"):
        stage_candidate(target, broken)
    unload_candidate(target)
    assert target.serving_version() == serving
    assert generate(target.grpc_url, "chat", "def ", max_tokens=4).finish_reason
