"""A real Triton (the server bundled in nvidia-pytriton, started the way the stack starts it) on free ports in a
tmp home, with an empty model repository, and a small exported Llama to serve."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack import triton
from stack.config import StackConfig
from stack.process import free_port, start_detached, stop_pid
from tasks.serving.client import TritonControl
from tasks.serving.repository import ModelRepository


@dataclass(frozen=True)
class TritonServer:
    http: str
    grpc: str
    metrics: str
    repository: ModelRepository
    control: TritonControl
    log: Path


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    cfg = StackConfig(home=tmp_path_factory.mktemp("triton"), postgres_port=0, lakefs_port=0, mlflow_port=0,
                      triton_http_port=free_port(), triton_grpc_port=free_port(), triton_metrics_port=free_port(),
                      airflow_port=0)
    log = cfg.home / "triton.log"
    pid = start_detached(triton.argv(cfg), pid_file=cfg.home / "triton.pid", log_file=log, env=triton.env(cfg))
    control = TritonControl(triton.url(cfg))
    try:
        import time

        deadline = time.monotonic() + 120
        while not control.server_ready():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        yield TritonServer(triton.url(cfg), f"127.0.0.1:{cfg.triton_grpc_port}",
                           f"http://127.0.0.1:{cfg.triton_metrics_port}/metrics",
                           ModelRepository(triton.model_repository(cfg).parent), control, log)
    finally:
        stop_pid(pid)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer Llama with the sample corpus's kind of tokenizer, saved as an HF export."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
            "import os\nimport sys\nprint(os.getcwd())"] * 50
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=96,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
