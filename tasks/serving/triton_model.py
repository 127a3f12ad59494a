"""The embedded target's Triton python-backend model: TensorRT-LLM LLM-API tensors, generation on CPU.

Each version directory's `model.py` re-exports TritonPythonModel from here. It loads the Hugging Face checkpoint
that the version holds (`hf/`), serves decoupled (one response per new piece of text when `streaming` is true, one
response otherwise), batches requests in flight (tasks.serving.engine), picks a LoRA adapter per request from the
repository's adapters index, and exports TTFT / per-token latency histograms and token counters on Triton's
metrics endpoint. Runs inside Triton's python stub, where `triton_python_backend_utils` exists.
"""

from __future__ import annotations

import json
import queue
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from tasks.serving.engine import InflightBatcher, Request, RequestError, Sampling, Timing
from tasks.serving.quantize import quantize
from tasks.serving.repository import find_adapter

LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


def _scalar(pb_utils: Any, request: Any, name: str, default: Any) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else value.item() if hasattr(value, "item") else value


def _strings(pb_utils: Any, request: Any, name: str) -> tuple[str, ...]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return ()
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1))


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import torch
        import triton_python_backend_utils as pb_utils
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.deployment = json.loads((version_dir / "deployment.json").read_text())
        torch.set_num_threads(int(self.deployment.get("threads") or torch.get_num_threads()))
        model = quantize(AutoModelForCausalLM.from_pretrained(version_dir / "hf").eval(),
                         self.deployment.get("quantization"))
        tokenizer = AutoTokenizer.from_pretrained(version_dir / "hf")
        self.adapters_index = Path(self.deployment["adapters_index"])
        self._outbox: queue.Queue = queue.Queue()
        self._courier = threading.Thread(target=self._deliver, name="response-courier", daemon=True)
        self._courier.start()
        self.batcher = InflightBatcher(model, tokenizer, max_batch=int(params.get("max_batch", 8)),
                                       adapters=self._adapter)
        labels = {"model": args["model_name"], "version": args["model_version"]}
        kinds = {"histogram": pb_utils.MetricFamily.HISTOGRAM, "counter": pb_utils.MetricFamily.COUNTER}
        # the families must outlive their metrics, so the model keeps both
        self.families = {name: pb_utils.MetricFamily(name, about, kinds[kind]) for name, about, kind in (
            ("llmops_llm_time_to_first_token_seconds", "Time from arrival to the first generated token", "histogram"),
            ("llmops_llm_time_per_output_token_seconds", "Mean time per generated token after the first",
             "histogram"),
            ("llmops_llm_prompt_tokens_total", "Prompt tokens read", "counter"),
            ("llmops_llm_output_tokens_total", "Tokens generated", "counter"),
            ("llmops_llm_request_failures_total", "Requests that ended in an error", "counter"))}
        self.ttft, self.tpot = (self.families[f"llmops_llm_{name}_seconds"].Metric(labels=labels,
                                                                                  buckets=LATENCY_BUCKETS)
                                for name in ("time_to_first_token", "time_per_output_token"))
        self.prompt_tokens, self.output_tokens, self.failures = (
            self.families[f"llmops_llm_{name}_total"].Metric(labels=labels)
            for name in ("prompt_tokens", "output_tokens", "request_failures"))

    def _adapter(self, name: str) -> tuple[str, str] | None:
        entry = find_adapter(self.adapters_index, name=name)
        return (f"{name}__r{entry['revision']}", entry["path"]) if entry else None

    def _adapter_name(self, request: Any) -> str | None:
        name = _scalar(self.pb, request, "lora_name", "") or None
        adapter_id = _scalar(self.pb, request, "lora_id", None)
        path = _scalar(self.pb, request, "lora_path", "") or None
        if name is None and adapter_id is None:
            if path:
                raise RequestError("lora_path: give lora_name or lora_id with it")
            return None
        entry = find_adapter(self.adapters_index, name=name, adapter_id=adapter_id)
        if entry is None:
            raise RequestError(f"lora_name/lora_id: no deployed adapter {name or adapter_id!r}")
        if path and Path(path).resolve() != Path(entry["path"]).resolve():
            raise RequestError(f"lora_path: {path} is not the deployed path of adapter {entry['name']!r}")
        return entry["name"]

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self.batcher.submit(self._request(request, sender))
            except RequestError as error:
                self._fail(sender, error)

    def _request(self, request: Any, sender: Any) -> Request:
        pb = self.pb
        streaming = bool(_scalar(pb, request, "streaming", False))
        with_reason = bool(_scalar(pb, request, "return_finish_reason", True))
        with_timing = bool(_scalar(pb, request, "sampling_param_return_perf_metrics", False))
        seed = _scalar(pb, request, "sampling_param_seed", None)
        sampling = Sampling(max_tokens=int(_scalar(pb, request, "sampling_param_max_tokens", 64)),
                            temperature=float(_scalar(pb, request, "sampling_param_temperature", 0.0)),
                            top_k=int(_scalar(pb, request, "sampling_param_top_k", 0)),
                            top_p=float(_scalar(pb, request, "sampling_param_top_p", 1.0)),
                            seed=None if seed is None else int(seed),
                            stop=_strings(pb, request, "sampling_param_stop"))
        prompt = _scalar(pb, request, "text_input", "")
        exclude_input = bool(_scalar(pb, request, "sampling_param_exclude_input_from_output", True))
        prefix = [] if exclude_input else [prompt]  # the prompt goes out once, ahead of the first text
        pieces: list[str] = []

        def on_text(text: str, timing: Timing) -> None:
            if streaming:
                self._send(sender, [self._text("".join(prefix) + text)])
                prefix.clear()
            else:
                pieces.append(text)

        def on_done(finish: str | None, error: Exception | None, timing: Timing) -> None:
            if error is not None:
                self._fail(sender, error)
                return
            self._record(timing)
            outputs = [self._text("".join(prefix) if streaming else "".join(prefix + pieces))]
            if with_reason:
                outputs.append(pb.Tensor("finish_reason", np.array([finish], dtype=np.object_)))
            if with_timing:
                outputs += [pb.Tensor(name, np.array([value], dtype=np.int64)) for name, value in (
                    ("arrival_time_ns", timing.arrival_ns), ("first_token_time_ns", timing.first_token_ns),
                    ("last_token_time_ns", timing.last_token_ns))]
            self._send(sender, outputs, final=True)

        return Request(prompt, sampling, on_text, on_done, adapter=self._adapter_name(request))

    def _text(self, text: str) -> Any:
        return self.pb.Tensor("text_output", np.array([text.encode()], dtype=np.object_))

    def _record(self, timing: Timing) -> None:
        self.ttft.observe((timing.first_token_ns - timing.arrival_ns) / 1e9)
        if timing.output_tokens > 1:
            self.tpot.observe((timing.last_token_ns - timing.first_token_ns) / 1e9 / (timing.output_tokens - 1))
        self.prompt_tokens.increment(timing.prompt_tokens)
        self.output_tokens.increment(timing.output_tokens)

    def _fail(self, sender: Any, error: Exception) -> None:
        self.failures.increment(1)
        code = self.pb.TritonError.INVALID_ARG if isinstance(error, RequestError) else self.pb.TritonError.INTERNAL
        self._outbox.put((sender, self.pb.InferenceResponse(error=self.pb.TritonError(str(error), code)),
                          self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL))

    def _send(self, sender: Any, outputs: list[Any], final: bool = False) -> None:
        flags = self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        self._outbox.put((sender, self.pb.InferenceResponse(outputs), flags))

    def _deliver(self) -> None:
        """Sends responses in order on its own thread, so the model steps on while Triton takes the last ones."""
        while (item := self._outbox.get()) is not None:
            sender, response, flags = item
            try:
                sender.send(response, flags=flags)
            except Exception:  # a client that went away loses its own responses only
                traceback.print_exc()

    def finalize(self) -> None:
        self.batcher.close()
        self._outbox.put(None)
        self._courier.join(timeout=30)
