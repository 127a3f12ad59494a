"""Serving: Triton-served streaming generation vs the same checkpoint generating in-process (issue 10).

    python bench/serving.py                                   # the newest fine-tune export's base-hf
    python bench/serving.py --checkpoint DIR --requests 32 --max-tokens 48 --threads 2

One run, one model, side by side:

1. in-process: Hugging Face `model.generate` (greedy, KV cache) on the checkpoint, one request after another.
   TTFT = from the `generate` call to the streamer receiving the first new token (prefill + first sampling; the
   prompt is tokenized before the clock starts); per-token = (last token - first token) / (tokens - 1) from the
   same streamer; total tok/s = tokens generated / wall time of all requests back to back (tokenizing and
   decoding included).
2. triton: the checkpoint deployed as version 1 of a python-backend model (tasks.serving.python_target, the same
   `populate` + `config` the deploy DAG uses) in a fresh Triton on free ports in a temp dir, stopped by PID at
   the end; streamed over gRPC with `tasks.serving.client.generate` (which opens one gRPC stream per request, as
   the deploy gates do). N client threads each send their share of --requests back to back. TTFT = client clock
   from send to the first streamed response with text; per-token = (last - first streamed response) / (responses
   - 1); total tok/s = output tokens (the model's own `llmops_llm_output_tokens_total` counter on Triton's metrics
   endpoint, before vs after) / wall time from the first send to the last final response.
3. int8: the same deployment with deployment.json `"quantization": "int8-dynamic"` (version 2, loaded in place of
   version 1). Its perplexity delta is computed in-process, fp32 vs tasks.serving.quantize (the
   same call tasks/serving/triton_model.py makes), on held-out text: standard-library docstrings from
   `tasks.curation.sample_corpus.stdlib_docs()` that the main job's sample corpus (1,500 documents, seed 7) does
   not contain, so pre-training never saw them; documents joined by EOS, scored in non-overlapping windows of the
   model's context.

Greedy everywhere, no stop strings, a fixed max_tokens; prompts are screened in-process first and only those whose
greedy continuation reaches max_tokens without EOS are used (the served fp32 model gives the same tokens), so all
rows generate the same lengths; the mean tokens per request is printed for each row. Every served configuration is
warmed up with one untimed request per client thread. Medians (p50) are over requests. The box may be shared:
each row carries the 1-minute load average at its start.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack import triton  # noqa: E402
from stack.config import StackConfig  # noqa: E402
from tasks.serving import python_target  # noqa: E402
from tasks.serving.client import Generation, TritonControl, TritonError, generate  # noqa: E402
from tasks.serving.quantize import perplexity, quantize  # noqa: E402
from tasks.serving.repository import ModelRepository  # noqa: E402

MODEL = "llm"
OUTPUT_TOKENS = "llmops_llm_output_tokens_total"
# Docstring-style openings (the model is pre-trained on stdlib docstrings); screened for running to max_tokens.
CANDIDATE_PROMPTS = (
    "Return the number of", "Create a new", "This module provides", "If the file", "Raise ValueError if",
    "Return True if the", "This class implements", "Read and return", "Parse the", "Write the data to",
    "Return a list of", "Set the", "The default value is", "Convert a string to", "Open a connection to",
    "The optional argument", "Return the value of the", "Add a new", "This function is", "Return a new",
)


@dataclass
class Row:
    name: str
    requests: int
    tokens: int  # output tokens, all requests
    wall_s: float
    ttft_s: list[float]
    per_token_s: list[float]
    load: float  # 1-minute load average when the row started (the box is shared)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def ttft_ms(self) -> float:
        return statistics.median(self.ttft_s) * 1e3

    @property
    def per_token_ms(self) -> float:
        return statistics.median(self.per_token_s) * 1e3

    def line(self) -> str:
        return (f"| {self.name} | {self.requests} | {self.tokens / self.requests:.1f} | {self.ttft_ms:.2f} | "
                f"{self.per_token_ms:.2f} | {self.tokens_per_s:,.0f} | {self.load:.1f} |")


# --- the checkpoint and the in-process baseline ------------------------------------------------------------------
def default_checkpoint() -> Path:
    """The newest fine-tune export's base model, as the main job leaves it under the stack's home."""
    root = StackConfig.from_env().home / "artifacts" / "checkpoints" / "finetune"
    found = sorted(root.glob("*/exports/base-hf"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no checkpoint: nothing matches {root}/*/exports/base-hf. Make one by running the main "
                         "job (`bash stack/main-job.sh`: curate, pre-train, fine-tune, export), or pass "
                         "--checkpoint DIR (a Hugging Face export with config.json, model.safetensors, tokenizer.json)")
    return found[-1]


def load(checkpoint: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(checkpoint).eval(), AutoTokenizer.from_pretrained(checkpoint)


def hf_generate(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> tuple[int, float, list[float]]:
    """Greedy `generate` with a streamer that clocks each new token: (tokens, start, token times)."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if self.prompt_seen:  # generate() puts the prompt first, then each new token
                self.times.append(time.perf_counter())
            self.prompt_seen = True

        def end(self) -> None:
            pass

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    clock = Clock()
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, streamer=clock)
    tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    return out.shape[1] - ids.shape[1], started, clock.times


def screen(model: Any, tokenizer: Any, max_tokens: int) -> list[str]:
    """The candidate prompts whose greedy continuation runs to max_tokens without EOS."""
    kept = []
    for prompt in CANDIDATE_PROMPTS:
        ids = _greedy_ids(model, tokenizer, prompt, max_tokens)
        if len(ids) == max_tokens and tokenizer.eos_token_id not in ids:
            kept.append(prompt)
    if len(kept) < 4:
        raise SystemExit(f"only {len(kept)} of {len(CANDIDATE_PROMPTS)} candidate prompts run to {max_tokens} "
                         "tokens without EOS on this checkpoint; lower --max-tokens")
    return kept


def _greedy_ids(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> list[int]:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(input_ids=ids, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def in_process(model: Any, tokenizer: Any, prompts: list[str], requests: int, max_tokens: int) -> Row:
    for prompt in prompts[:2]:  # warm-up
        hf_generate(model, tokenizer, prompt, max_tokens)
    ttft, per_token, tokens, load = [], [], 0, os.getloadavg()[0]
    began = time.perf_counter()
    for index in range(requests):
        count, started, times = hf_generate(model, tokenizer, prompts[index % len(prompts)], max_tokens)
        tokens += count
        ttft.append(times[0] - started)
        if count > 1:
            per_token.append((times[-1] - times[0]) / (count - 1))
    return Row("in-process sequential (HF generate)", requests, tokens, time.perf_counter() - began, ttft, per_token,
               load)


# --- perplexity -------------------------------------------------------------------------------------------------
def held_out_ids(tokenizer: Any, tokens: int) -> list[int]:
    """Stdlib docstrings outside the main job's sample corpus (never pre-trained on), EOS-joined, in stdlib order."""
    from tasks.curation.sample_corpus import DEFAULT_DOCS, DEFAULT_SEED, clean_docs, stdlib_docs

    seen = {doc.id for doc in clean_docs(DEFAULT_DOCS, DEFAULT_SEED)}
    ids: list[int] = []
    for doc in stdlib_docs():
        if doc.id not in seen:
            ids += tokenizer(doc.text).input_ids + [tokenizer.eos_token_id]
            if len(ids) >= tokens:
                return ids[:tokens]
    return ids


# --- Triton -----------------------------------------------------------------------------------------------------
@dataclass
class Served:
    grpc: str
    metrics: str
    repository: ModelRepository
    control: TritonControl
    log: Path


@contextmanager
def triton_server(home: Path) -> Iterator[Served]:
    """A fresh Triton (explicit model control) on free ports with its repository under home; stopped by PID."""
    with triton.standalone(home) as server:
        yield Served(server.grpc, server.metrics, ModelRepository(server.repository_root), TritonControl(server.http),
                     server.log)


def deploy(server: Served, checkpoint: Path, quantization: str | None, threads: int) -> int:
    """A new version of MODEL holding the checkpoint, pinned in config.pbtxt, loaded and ready."""
    repo = server.repository

    def populate(version_dir: Path) -> None:
        python_target.populate(version_dir, checkpoint, adapters_index=repo.adapters_index,
                               lineage={"registered": f"bench:{checkpoint}"}, quantization=quantization,
                               threads=threads)  # the served model's torch threads, as in-process

    with repo.writer():
        version = repo.add_version(MODEL, populate)
        repo.write_config(MODEL, python_target.config(MODEL, [version], registered_model="bench",
                                                      registered_version=str(version)))
    try:
        server.control.load(MODEL)
        server.control.wait_ready(MODEL, version)
    except TritonError as error:
        raise SystemExit(f"{error}; Triton's log:\n{server.log.read_text()[-3000:]}") from None
    return version


def output_tokens(server: Served, version: int) -> int:
    metrics = urllib.request.urlopen(server.metrics, timeout=30).read().decode()
    label = f'version="{version}"'
    return sum(int(float(line.split()[-1])) for line in metrics.splitlines()
               if line.startswith(OUTPUT_TOKENS + "{") and f'model="{MODEL}"' in line and label in line)


def served(server: Served, version: int, name: str, prompts: list[str], concurrency: int, requests: int,
           max_tokens: int) -> Row:
    def send(prompt: str) -> Generation:
        return generate(server.grpc, MODEL, prompt, max_tokens=max_tokens, timeout=300)

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: one request per thread, together
        list(pool.map(send, prompts[:concurrency]))
    results: list[Generation] = []
    lock = threading.Lock()

    def client(worker: int) -> None:
        for index in range(worker, requests, concurrency):  # its share, back to back
            result = send(prompts[index % len(prompts)])
            with lock:
                results.append(result)

    before, load = output_tokens(server, version), os.getloadavg()[0]
    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client, worker) for worker in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - began
    tokens = output_tokens(server, version) - before
    ttft = [r.ttft for r in results]
    per_token = [(r.token_times[-1] - r.token_times[0]) / (len(r.token_times) - 1)
                 for r in results if len(r.token_times) > 1]
    return Row(f"{name} c={concurrency}", requests, tokens, wall, ttft, per_token, load)


# --- main -------------------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path,
                   help="a Hugging Face export (default: the newest "
                        ".stack/artifacts/checkpoints/finetune/*/exports/base-hf)")
    p.add_argument("--requests", type=int, default=24, help="timed requests per row (default 24: 24, 6 and 3 per "
                                                            "client thread at concurrency 1, 4 and 8)")
    p.add_argument("--max-tokens", type=int, default=48, help="sampling_param_max_tokens / max_new_tokens")
    p.add_argument("--concurrency", default="1,4,8", help="client threads for the fp32 rows (default 1,4,8)")
    p.add_argument("--int8-concurrency", default="1,8", help="client threads for the int8 rows (default 1,8)")
    p.add_argument("--ppl-tokens", type=int, default=2048, help="held-out tokens for the perplexity delta")
    p.add_argument("--threads", type=int,
                   help="torch threads, in-process and in the served model (deployment.json `threads`); "
                        "default: torch's default here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    checkpoint = args.checkpoint or default_checkpoint()
    if not (checkpoint / "config.json").exists():
        raise SystemExit(f"--checkpoint {checkpoint}: no config.json; expected a Hugging Face export")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    model, tokenizer = load(checkpoint)
    print(f"checkpoint {checkpoint} ({sum(p.numel() for p in model.parameters()):,} parameters, context "
          f"{model.config.max_position_embeddings})", flush=True)
    prompts = screen(model, tokenizer, args.max_tokens)
    print(f"{len(prompts)} of {len(CANDIDATE_PROMPTS)} prompts run to {args.max_tokens} tokens without EOS: "
          f"{prompts}", flush=True)
    rows = [in_process(model, tokenizer, prompts, args.requests, args.max_tokens)]
    print(rows[-1].line(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as home, triton_server(Path(home)) as server:
        for name, quantization, levels in (("triton", None, args.concurrency),
                                           ("int8", "int8-dynamic", args.int8_concurrency)):
            began = time.perf_counter()
            version = deploy(server, checkpoint, quantization, threads)
            print(f"{name}: version {version} loaded and ready in {time.perf_counter() - began:.1f} s", flush=True)
            for concurrency in (int(c) for c in levels.split(",")):
                rows.append(served(server, version, name, prompts, concurrency, args.requests, args.max_tokens))
                print(rows[-1].line(), flush=True)
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
        warnings.simplefilter("ignore")
        quantized = quantize(load(checkpoint)[0], "int8-dynamic")
    ids = held_out_ids(tokenizer, args.ppl_tokens)
    ppl_fp32, ppl_int8 = perplexity(model, ids), perplexity(quantized, ids)
    load_after = os.getloadavg()

    print(f"\ncpu ({os.cpu_count()} cores), {threads} torch threads in-process and in the served model; torch "
          f"{torch.__version__}; greedy, max_tokens {args.max_tokens}, {args.requests} timed requests per row over "
          f"{len(prompts)} prompts; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after\n")
    print("| run | requests | mean tokens | TTFT p50 (ms) | per-token p50 (ms) | total tok/s | load avg |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.line())
    base = rows[0]
    by_name = {row.name: row for row in rows}
    one, eight = by_name.get("triton c=1"), by_name.get("triton c=8")
    print()
    if one:
        print(f"Triton overhead at c=1: {(base.tokens_per_s / one.tokens_per_s - 1):+.1%} time per output token "
              f"end to end, i.e. 1 / total tok/s ({one.tokens_per_s:,.0f} vs {base.tokens_per_s:,.0f} in-process) "
              f"(target <= 10%); per-token p50 {(one.per_token_ms / base.per_token_ms - 1):+.1%}, "
              f"TTFT p50 {(one.ttft_ms / base.ttft_ms - 1):+.1%}")
    if eight:
        print(f"c=8 total tok/s / in-process sequential: {eight.tokens_per_s / base.tokens_per_s:.2f}x "
              "(target >= 2x)")
    print(f"int8 perplexity delta: {(ppl_int8 / ppl_fp32 - 1):+.2%} (fp32 {ppl_fp32:.2f}, int8-dynamic "
          f"{ppl_int8:.2f}, {len(ids)} held-out tokens: stdlib docstrings not in the main job's sample corpus, "
          f"windows of {model.config.max_position_embeddings})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
