"""Latency, throughput and errors of a window: percentiles from the request log, queue time from Triton."""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np


def _pct(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def from_requests(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """TTFT, end-to-end latency and per-request tokens/s percentiles, and the error rate."""
    ok = [r for r in rows if not r.get("error")]
    ttft = [r["ttft_ms"] for r in ok if r.get("ttft_ms") is not None]
    latency = [r["latency_ms"] for r in ok if r.get("latency_ms") is not None]
    rates = [r["tokens_out"] / (r["latency_ms"] / 1000) for r in ok if r.get("tokens_out") and r.get("latency_ms")]
    return {"requests": len(rows), "error_rate": (len(rows) - len(ok)) / len(rows) if rows else None,
            "ttft_p50_ms": _pct(ttft, 50), "ttft_p95_ms": _pct(ttft, 95),
            "latency_p50_ms": _pct(latency, 50), "latency_p95_ms": _pct(latency, 95),
            "tokens_per_s_p50": _pct(rates, 50)}


def from_triton(metrics_url: str, model: str) -> dict[str, float | None]:
    """Mean queue time and failure count of `model` since the server started, from its Prometheus endpoint."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError as error:
        return {"triton_error": f"{metrics_url}: {error}"}
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or f'model="{model}"' not in line:
            continue
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0]
        values[metric] = values.get(metric, 0.0) + float(value)
    count = values.get("nv_inference_request_success", 0) + values.get("nv_inference_request_failure", 0)
    queue_us = values.get("nv_inference_queue_duration_us")
    return {"triton_requests": count, "triton_failures": values.get("nv_inference_request_failure"),
            "triton_queue_mean_ms": queue_us / 1000 / count if queue_us is not None and count else None,
            "triton_output_tokens": values.get("llmops_llm_output_tokens_total")}
