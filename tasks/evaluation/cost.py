"""Cost attribution from a price config, and prompt A/B arms compared on quality, latency and cost.

A request's cost = its end-to-end seconds x the accelerator's price per second (device time attributed to the
request that held it) + prompt and output tokens x per-1k-token rates. Rolled up per user, model version and
prompt (id/version/variant).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def request_cost(row: dict[str, Any], prices: dict[str, float]) -> float:
    seconds = (row.get("latency_ms") or 0) / 1000
    return (seconds * prices["accelerator_hour_usd"] / 3600
            + (row.get("tokens_in") or 0) / 1000 * prices["input_per_1k_tokens_usd"]
            + (row.get("tokens_out") or 0) / 1000 * prices["output_per_1k_tokens_usd"])


def rollup(rows: Sequence[dict[str, Any]], prices: dict[str, float]) -> dict[str, Any]:
    totals: dict[str, dict[str, float]] = {"user": defaultdict(float), "model_version": defaultdict(float),
                                           "prompt": defaultdict(float)}
    for row in rows:
        cost = request_cost(row, prices)
        totals["user"][row["user_id"]] += cost
        totals["model_version"][str(row.get("model_version"))] += cost
        totals["prompt"][f"{row.get('prompt_id')}/v{row.get('prompt_version')}/{row.get('prompt_variant')}"] += cost
    total = sum(totals["user"].values())
    return {"total_usd": total, "per_request_usd": total / len(rows) if rows else None,
            **{f"by_{kind}": dict(sorted(values.items(), key=lambda kv: -kv[1])) for kind, values in totals.items()}}


def compare_arms(rows: Sequence[dict[str, Any]], relevance: dict[int, float], prices: dict[str, float]
                 ) -> dict[str, Any]:
    """Per prompt variant: requests, mean relevance, latency p50, mean cost; with two or more arms, Mann-Whitney U
    p-values between the two largest (no normality assumed; small windows stay honest)."""
    from scipy.stats import mannwhitneyu

    arms: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if not row.get("error") and row.get("prompt_variant"):
            arms[row["prompt_variant"]].append(row)
    summary = {}
    for arm, members in arms.items():
        scores = [relevance[r["id"]] for r in members if r["id"] in relevance]
        summary[arm] = {"requests": len(members), "relevance_mean": float(np.mean(scores)) if scores else None,
                        "latency_p50_ms": float(np.median([r["latency_ms"] for r in members])),
                        "cost_mean_usd": float(np.mean([request_cost(r, prices) for r in members]))}
    result: dict[str, Any] = {"arms": summary}
    largest = sorted(arms, key=lambda a: -len(arms[a]))[:2]
    if len(largest) == 2 and min(len(arms[a]) for a in largest) >= 5:
        a, b = (arms[x] for x in largest)
        series = {"relevance": lambda r: relevance.get(r["id"]), "latency": lambda r: r["latency_ms"],
                  "cost": lambda r: request_cost(r, prices)}
        tests = {}
        for name, value in series.items():
            xa = [v for v in map(value, a) if v is not None]
            xb = [v for v in map(value, b) if v is not None]
            if len(xa) >= 5 and len(xb) >= 5 and len(set(xa) | set(xb)) > 1:
                tests[name] = float(mannwhitneyu(xa, xb).pvalue)
        result["compared"] = {"arms": largest, "mann_whitney_p": tests}
    return result
