"""In-flight batching for a Hugging Face causal LM on CPU: requests join and leave a running batch between steps.

One thread owns the model. Each loop it admits waiting requests (prefilled one by one, each with its own LoRA
adapter), then runs one decode step for every active sequence together: the batch's KV cache is left-padded to the
longest sequence and masked, so sequences of any length share a forward pass. The cache is re-packed only when the
batch's membership changes. Throughput therefore grows with concurrency, as in TensorRT-LLM's in-flight batching.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


class RequestError(ValueError):
    """A request that cannot be served as asked; the message names the field and the rule."""


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no limit
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def check(self) -> None:
        rules = [(self.max_tokens >= 1, "sampling_param_max_tokens must be >= 1"),
                 (self.temperature >= 0, "sampling_param_temperature must be >= 0"),
                 (self.top_k >= 0, "sampling_param_top_k must be >= 0"),
                 (0 < self.top_p <= 1, "sampling_param_top_p must be in (0, 1]")]
        for ok, rule in rules:
            if not ok:
                raise RequestError(rule)


@dataclass
class Timing:
    arrival_ns: int = field(default_factory=time.time_ns)
    first_token_ns: int = 0
    last_token_ns: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Request:
    """One generation. `on_text` gets each new piece of text; `on_done` once, with a finish reason or an error."""

    prompt: str
    sampling: Sampling
    on_text: Callable[[str, Timing], None]
    on_done: Callable[[str | None, Exception | None, Timing], None]
    adapter: str | None = None
    timing: Timing = field(default_factory=Timing)


@dataclass
class _Sequence:
    request: Request
    ids: list[int]
    cache: list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), [1, heads, length, dim]
    generator: torch.Generator | None
    max_tokens: int
    adapter: str  # the key its LoRA adapter is loaded under, or BASE_ADAPTER
    generated: list[int] = field(default_factory=list)
    emitted: str = ""

    @property
    def length(self) -> int:
        return self.cache[0][0].shape[2]


class InflightBatcher:
    """Serves generation requests from one model thread.

    `adapters` maps a requested adapter name to (the key it is loaded under, its PEFT directory), or None if unknown;
    a new key (a new adapter, or a new revision of one) is loaded between steps, without reloading the base.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 8,
                 adapters: Callable[[str], tuple[str, str] | None] = lambda name: None) -> None:
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        self.max_positions = int(model.config.max_position_embeddings)
        self.eos = tokenizer.eos_token_id
        self._adapter_dirs = adapters
        self._loaded_adapters: set[str] = set()
        self._waiting: queue.Queue[Request | None] = queue.Queue()
        self._active: list[_Sequence] = []
        self._packed: tuple[Any, torch.Tensor] | None = None  # (batch cache, attention mask) while membership holds
        self._thread = threading.Thread(target=self._loop, name="inflight-batcher", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        request.sampling.check()
        self._waiting.put(request)

    def close(self) -> None:
        self._waiting.put(None)
        self._thread.join(timeout=30)

    @property
    def active(self) -> int:
        return len(self._active)

    def _loop(self) -> None:
        while True:
            admitted = self._admit()
            if admitted is None:
                return
            if self._active:
                try:
                    self._decode_step()
                except Exception as error:  # a failed step ends the batch's requests, never the server
                    for seq in self._active:
                        _notify(seq.request, None, error)
                    self._active, self._packed = [], None

    def _admit(self) -> bool | None:
        while len(self._active) < self.max_batch:
            try:
                request = self._waiting.get(block=not self._active)
            except queue.Empty:
                return True
            if request is None:
                return None
            try:
                self._start(request)
            except Exception as error:
                _notify(request, None, error)
        return True

    def _forward(self, ids: torch.Tensor, adapters: list[str], **kwargs: Any) -> Any:
        if self._loaded_adapters:
            kwargs["adapter_names"] = adapters
        with torch.inference_mode():
            return self.model(input_ids=ids, use_cache=True, **kwargs)

    def _adapter(self, name: str | None) -> str:
        if not name:
            return BASE_ADAPTER
        found = self._adapter_dirs(name)
        if found is None:
            raise RequestError(f"lora_name: unknown adapter {name!r}; deployed adapters are listed in "
                               "the model repository's adapters/adapters.json")
        key, path = found
        if key not in self._loaded_adapters:
            from peft import PeftModel

            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=key)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=key).eval()
            self._loaded_adapters.add(key)
        return key

    def _start(self, request: Request) -> None:
        ids = self.tokenizer(request.prompt).input_ids
        wanted = len(ids) + request.sampling.max_tokens
        if not ids:
            raise RequestError("text_input: empty prompt")
        if len(ids) >= self.max_positions:
            raise RequestError(f"text_input: prompt of {len(ids)} tokens does not fit the model's "
                               f"{self.max_positions} positions")
        adapter = self._adapter(request.adapter)
        request.timing.prompt_tokens = len(ids)
        out = self._forward(torch.tensor([ids]), [adapter])
        cache = [(layer.keys, layer.values) for layer in out.cache.layers]
        generator = None
        if request.sampling.seed is not None:
            generator = torch.Generator().manual_seed(request.sampling.seed)
        # generation stops at the context's end with finish reason "length"
        seq = _Sequence(request, ids, cache, generator, min(wanted, self.max_positions) - len(ids), adapter)
        if self._take(seq, out.logits[0, -1]):
            self._active.append(seq)
            self._packed = None

    def _decode_step(self) -> None:
        cache, mask = self._packed or self._pack()
        mask = torch.cat([mask, torch.ones(len(self._active), 1, dtype=mask.dtype)], dim=1)
        positions = torch.tensor([[seq.length] for seq in self._active])
        ids = torch.tensor([[seq.generated[-1]] for seq in self._active])
        out = self._forward(ids, [seq.adapter for seq in self._active],
                            attention_mask=mask, position_ids=positions, cache=cache)
        width = mask.shape[1]
        keep = []
        for row, seq in enumerate(self._active):
            start = width - seq.length - 1
            seq.cache = [(layer.keys[row:row + 1, :, start:], layer.values[row:row + 1, :, start:])
                         for layer in out.cache.layers]
            if self._take(seq, out.logits[row, -1]):
                keep.append(seq)
        if len(keep) == len(self._active):
            self._packed = (out.cache, mask)
        else:
            self._active, self._packed = keep, None

    def _pack(self) -> tuple[Any, torch.Tensor]:
        """The active sequences' caches, left-padded to the longest, as one batch cache and its attention mask."""
        from transformers import DynamicCache

        width = max(seq.length for seq in self._active)
        mask = torch.zeros(len(self._active), width, dtype=torch.long)
        cache = DynamicCache()
        for index in range(len(self._active[0].cache)):
            keys, values = self._active[0].cache[index]
            shape = (len(self._active), keys.shape[1], width, keys.shape[3])
            padded_keys, padded_values = keys.new_zeros(shape), values.new_zeros(shape)
            for row, seq in enumerate(self._active):
                k, v = seq.cache[index]
                padded_keys[row, :, width - seq.length:] = k[0]
                padded_values[row, :, width - seq.length:] = v[0]
                mask[row, width - seq.length:] = 1
            cache.update(padded_keys, padded_values, index)
        return cache, mask

    def _take(self, seq: _Sequence, logits: torch.Tensor) -> bool:
        """Sample the next token, stream the new text; False once the sequence has finished."""
        token = self._sample(logits, seq.request.sampling, seq.generator)
        timing = seq.request.timing
        timing.last_token_ns = time.time_ns()
        timing.first_token_ns = timing.first_token_ns or timing.last_token_ns
        finish = None
        if token == self.eos:
            finish = "stop"
        else:
            seq.generated.append(token)
        timing.output_tokens = len(seq.generated)
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        for stop in seq.request.sampling.stop:
            if stop and stop in text:
                text, finish = text[:text.index(stop)], "stop"
        if finish is None and len(seq.generated) >= seq.max_tokens:
            finish = "length"
        if finish is not None or not text.endswith("\ufffd"):  # hold back a half-decoded UTF-8 character
            if len(text) > len(seq.emitted) and text.startswith(seq.emitted):
                try:
                    seq.request.on_text(text[len(seq.emitted):], timing)
                except Exception as error:  # e.g. the client went away: this sequence ends, the batch goes on
                    _notify(seq.request, None, error)
                    return False
                seq.emitted = text
        if finish is not None:
            _notify(seq.request, finish, None)
            return False
        return True

    @staticmethod
    def _sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
        if sampling.temperature == 0 or sampling.top_k == 1:
            return int(torch.argmax(logits))
        logits = logits.float() / sampling.temperature
        if sampling.top_k:
            kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if sampling.top_p < 1:
            ordered, order = torch.sort(probs, descending=True)
            beyond = torch.cumsum(ordered, dim=0) - ordered > sampling.top_p
            probs = probs.scatter(0, order, ordered.masked_fill(beyond, 0))
        return int(torch.multinomial(probs, 1, generator=generator))



def _notify(request: Request, finish: str | None, error: Exception | None) -> None:
    """Tell a request it ended; a failing callback must not stop the batcher for everyone else."""
    try:
        request.on_done(finish, error, request.timing)
    except Exception:
        traceback.print_exc()
