"""Latency percentiles, Triton's queue time, cost attribution and the prompt A/B comparison on known rows."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from stack.process import free_port
from tasks.evaluation import cost, performance

PRICES = {"accelerator_hour_usd": 3.6, "input_per_1k_tokens_usd": 1.0, "output_per_1k_tokens_usd": 2.0}


def rows(n: int, variant: str, latency: float, **extra) -> list[dict]:
    return [{"id": hash((variant, i)), "user_id": f"u{i % 2}", "prompt_id": "p", "prompt_version": 1,
             "prompt_variant": variant, "model_version": "m/1", "ttft_ms": 10.0 + i, "latency_ms": latency + i,
             "tokens_in": 100, "tokens_out": 50, "error": None, **extra} for i in range(n)]


def test_percentiles_and_error_rate_of_a_window():
    window = rows(19, "a", 1000) + [{"error": "TritonError: down", "ttft_ms": None, "latency_ms": 5.0}]
    figures = performance.from_requests(window)
    assert figures["requests"] == 20 and figures["error_rate"] == pytest.approx(0.05)
    assert figures["ttft_p50_ms"] == pytest.approx(19.0) and figures["latency_p95_ms"] > figures["latency_p50_ms"]
    assert figures["tokens_per_s_p50"] == pytest.approx(50 / 1.009)
    assert performance.from_requests([])["error_rate"] is None


def test_a_request_costs_its_device_seconds_and_its_tokens():
    # 2 s at 3.6 USD/hour = 0.002; 100 prompt tokens at 1/1k = 0.1; 50 output tokens at 2/1k = 0.1
    assert cost.request_cost({"latency_ms": 2000, "tokens_in": 100, "tokens_out": 50}, PRICES) == pytest.approx(0.202)
    rolled = cost.rollup(rows(4, "a", 2000), PRICES)
    assert rolled["total_usd"] == pytest.approx(sum(cost.request_cost(r, PRICES) for r in rows(4, "a", 2000)))
    assert set(rolled["by_user"]) == {"u0", "u1"} and list(rolled["by_prompt"]) == ["p/v1/a"]


def test_arms_are_compared_with_a_significance_test():
    slow, fast = rows(12, "a", 5000), rows(12, "b", 100)
    relevance = {r["id"]: 0.5 for r in slow + fast}
    result = cost.compare_arms(slow + fast, relevance, PRICES)
    assert result["arms"]["a"]["latency_p50_ms"] > result["arms"]["b"]["latency_p50_ms"]
    assert result["compared"]["mann_whitney_p"]["latency"] < 0.001  # clearly different
    assert "relevance" not in result["compared"]["mann_whitney_p"]  # all equal: no test to run
    assert "compared" not in cost.compare_arms(rows(3, "a", 1) + rows(3, "b", 1), relevance, PRICES)


def test_queue_time_and_failures_come_from_tritons_prometheus_text():
    text = ('nv_inference_request_success{model="llm",version="1"} 8\n'
            'nv_inference_request_failure{model="llm",version="1"} 2\n'
            'nv_inference_queue_duration_us{model="llm",version="1"} 5000\n'
            'nv_inference_request_success{model="other",version="1"} 99\n')

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", free_port()), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        figures = performance.from_triton(f"http://127.0.0.1:{server.server_port}/metrics", "llm")
    finally:
        server.shutdown()
    assert figures["triton_requests"] == 10 and figures["triton_failures"] == 2
    assert figures["triton_queue_mean_ms"] == pytest.approx(0.5)
    assert "triton_error" in performance.from_triton(f"http://127.0.0.1:{free_port()}/metrics", "llm")
