"""The shipped Grafana dashboard reads the metrics the served model and Triton really export."""

from __future__ import annotations

import json
import re

from tasks.evaluation.config import INCLUDE

# the served model's own families (tasks/serving/triton_model.py) and Triton's that the dashboard may use
EXPORTED = {"llmops_llm_time_to_first_token_seconds_bucket", "llmops_llm_time_per_output_token_seconds_bucket",
            "llmops_llm_prompt_tokens_total", "llmops_llm_output_tokens_total", "llmops_llm_request_failures_total",
            "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_queue_duration_us",
            "nv_inference_count"}


def test_every_panel_queries_exported_metrics_only():
    dashboard = json.loads((INCLUDE / "grafana-dashboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(llmops_llm_\w+|nv_inference_\w+)\b", target["expr"]))
    assert used and used <= EXPORTED, used - EXPORTED
    source = (INCLUDE.parents[1] / "tasks" / "serving" / "triton_model.py").read_text()
    for family in {u.removesuffix("_bucket") for u in used if u.startswith("llmops_")}:
        assert f'"{family}"' in source, family
