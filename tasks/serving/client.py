"""Talking to Triton: model control over HTTP, streamed generation over gRPC with the LLM-API tensors.

Used by the deploy gates, the benchmark, the main job and the RAG answer path; the same calls work against the
embedded python model and TensorRT-LLM's LLM API model, since both take and give the same tensors.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class TritonError(RuntimeError):
    """Triton refused or failed a request; the message carries Triton's own words."""


@dataclass
class Generation:
    text: str = ""
    finish_reason: str | None = None
    started: float = 0.0  # client clock (perf_counter) at send
    token_times: list[float] = field(default_factory=list)  # client clock at each streamed response with text
    server_ns: dict[str, int] = field(default_factory=dict)  # arrival / first / last token times, server clock

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.started

    @property
    def total(self) -> float:
        return self.token_times[-1] - self.started


class TritonControl:
    """Load, unload and readiness through Triton's HTTP API (explicit model control)."""

    def __init__(self, http_url: str, timeout: float = 600) -> None:
        self.base, self.timeout = http_url.rstrip("/"), timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {"error": raw.decode(errors="replace")}
        except urllib.error.URLError as error:
            raise TritonError(f"Triton at {self.base} is not reachable: {error.reason}") from error

    def server_ready(self) -> bool:
        try:
            return self._call("GET", "/v2/health/ready")[0] == 200
        except TritonError:
            return False

    def load(self, model: str) -> None:
        status, body = self._call("POST", f"/v2/repository/models/{model}/load", {})
        if status != 200:
            raise TritonError(f"loading {model}: {(body or {}).get('error', status)}")

    def unload(self, model: str) -> None:
        status, body = self._call("POST", f"/v2/repository/models/{model}/unload", {})
        if status != 200:
            raise TritonError(f"unloading {model}: {(body or {}).get('error', status)}")

    def ready(self, model: str, version: int | None = None) -> bool:
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready"
        return self._call("GET", path)[0] == 200

    def model_config(self, model: str) -> dict[str, Any]:
        """The loaded model's config as Triton reports it (its parameters carry the registered version)."""
        status, body = self._call("GET", f"/v2/models/{model}/config")
        if status != 200:
            raise TritonError(f"{model}: {(body or {}).get('error', status)}")
        return body

    def index(self) -> list[dict[str, Any]]:
        return self._call("POST", "/v2/repository/index", {})[1] or []

    def wait_ready(self, model: str, version: int | None = None, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready(model, version):
            if time.monotonic() > deadline:
                raise TritonError(f"{model} version {version or 'any'} not ready after {timeout:.0f}s")
            time.sleep(0.2)


def _inputs(prompt: str, max_tokens: int, streaming: bool, extra: dict[str, Any]) -> list[Any]:
    from tritonclient import grpc as grpcclient

    values: dict[str, tuple[np.ndarray, str]] = {
        "text_input": (np.array([prompt.encode()], dtype=np.object_), "BYTES"),
        "streaming": (np.array([streaming], dtype=bool), "BOOL"),
        "sampling_param_max_tokens": (np.array([max_tokens], dtype=np.int32), "INT32"),
    }
    types = {float: (np.float32, "FP32"), int: (np.int32, "INT32"), str: (np.object_, "BYTES"), bool: (bool, "BOOL")}
    for name, value in extra.items():
        if value is None:
            continue
        dtype, triton_type = (np.uint64, "UINT64") if name == "sampling_param_seed" else \
            (np.uint64, "UINT64") if name == "lora_id" else types[type(value)]
        values[name] = (np.array([value.encode() if isinstance(value, str) else value], dtype=dtype), triton_type)
    tensors = []
    for name, (array, triton_type) in values.items():
        tensor = grpcclient.InferInput(name, list(array.shape), triton_type)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def generate(grpc_url: str, model: str, prompt: str, *, max_tokens: int = 64, streaming: bool = True,
             timeout: float = 120, **params: Any) -> Generation:
    """One request over a gRPC stream; params are further LLM-API inputs (sampling_param_*, lora_name, ...)."""
    from tritonclient import grpc as grpcclient

    responses: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(grpc_url)
    result = Generation()
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error, time.perf_counter())))
        result.started = time.perf_counter()
        client.async_stream_infer(model, _inputs(prompt, max_tokens, streaming, params),
                                  enable_empty_final_response=True)
        while True:
            try:
                response, error, at = responses.get(timeout=timeout)
            except queue.Empty:
                raise TritonError(f"{model}: no response within {timeout:.0f}s") from None
            if error is not None:
                raise TritonError(f"{model}: {error.message() if hasattr(error, 'message') else error}")
            final = response.get_response().parameters["triton_final_response"].bool_param
            text = response.as_numpy("text_output")
            if text is not None and text.size and text.reshape(-1)[0]:
                result.text += text.reshape(-1)[0].decode()
                result.token_times.append(at)
            reason = response.as_numpy("finish_reason")
            if reason is not None and reason.size:
                result.finish_reason = reason.reshape(-1)[0].decode()
            for name in ("arrival_time_ns", "first_token_time_ns", "last_token_time_ns"):
                value = response.as_numpy(name)
                if value is not None and value.size:
                    result.server_ns[name] = int(value.reshape(-1)[0])
            if final:
                return result
    finally:
        client.stop_stream(cancel_requests=True)
        client.close()
