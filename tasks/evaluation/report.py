"""The monitoring run's HTML report: one self-contained file (plots inlined as PNG) a person can open anywhere."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>'


def _plots(figures: dict[str, Any], embeddings: tuple[np.ndarray, np.ndarray] | None) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    if embeddings is not None and len(embeddings[0]) and len(embeddings[1]):
        reference, current = embeddings
        both = np.vstack([reference, current])
        centred = both - both.mean(axis=0)
        axes2d = np.linalg.svd(centred, full_matrices=False)[2][:2]  # the first two principal axes
        projected = centred @ axes2d.T
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(*projected[:len(reference)].T, s=8, alpha=0.5, label="reference")
        ax.scatter(*projected[len(reference):].T, s=8, alpha=0.5, label="current")
        ax.set_title("query embeddings, first two principal axes")
        ax.legend()
        out.append(("Input drift", _png(fig)))
        plt.close(fig)
    perf = figures.get("performance", {})
    keys = [k for k in ("ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms") if perf.get(k) is not None]
    if keys:
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(keys, [perf[k] for k in keys])
        ax.set_ylabel("ms")
        ax.set_title("latency percentiles, current window")
        out.append(("Latency", _png(fig)))
        plt.close(fig)
    arms = figures.get("ab", {}).get("arms", {})
    if arms:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        names = list(arms)
        axes[0].bar(names, [arms[a]["cost_mean_usd"] for a in names])
        axes[0].set_title("mean cost per request (USD) by prompt arm")
        axes[1].bar(names, [arms[a]["relevance_mean"] or 0 for a in names])
        axes[1].set_title("mean answer relevance by prompt arm")
        out.append(("Cost and prompt A/B", _png(fig)))
        plt.close(fig)
    models = figures.get("offline_eval", {}).get("models", {})
    if models:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        labels = [f"{role}\n{m['model']}" for role, m in models.items()]
        axes[0].bar(labels, [m["byte_perplexity"] for m in models.values()])
        axes[0].set_title("held-out perplexity per byte (lower is better)")
        axes[1].bar(labels, [m["accuracy"] for m in models.values()])
        axes[1].set_title("question-set accuracy")
        out.append(("Offline evaluation: serving vs candidate", _png(fig)))
        plt.close(fig)
    return out


def write(path: Path, title: str, figures: dict[str, Any], breaches: dict[str, str], methods: dict[str, str],
          embeddings: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    status = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(m)}</li>" for c, m in breaches.items()) \
        or "<li>no check breached</li>"
    plots = "".join(f"<h2>{html.escape(name)}</h2>{image}" for name, image in _plots(figures, embeddings))
    how = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in methods.items())
    body = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><h2>Checks</h2><ul>{status}</ul>{plots}"
            f"<h2>How each figure is computed</h2><ul>{how}</ul>"
            f"<h2>All figures</h2><pre>{html.escape(json.dumps(figures, indent=2, default=str))}</pre></body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path
