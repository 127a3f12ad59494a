"""The monitoring step: one window of the request log (and Triton's metrics) -> drift, quality, performance and
cost figures, plus the offline evaluation of the served model against the registry's candidate (with --repository),
the checks they breach, an HTML report, and a monitor_runs row for trends.

    python -m tasks.evaluation.steps evaluate --window-end 2026-11-26T12:00:00Z --run-key monitor_llm/<run id> \
        --reports <dir> [--metrics-url http://127.0.0.1:18003/metrics] [--served-name llm] \
        [--repository .stack/triton [--candidate models:/llmops-tiny/4] [--data-ref main]]

Prints one JSON line: {"status", "breaches", "report", ...}. A window with too few requests is "not enough data":
the report says so and nothing is breached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from tasks.evaluation import config as monitoring_config
from tasks.evaluation import cost, performance, report


def read_window(conn: psycopg.Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    cursor = conn.execute("SELECT * FROM requests WHERE at >= %s AND at < %s ORDER BY id", (start, end))
    names = [d.name for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def contexts(conn: psycopg.Connection, index: str, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Retrieved chunk texts by hash, from the index's live view (chunks since removed are simply missing)."""
    wanted = sorted({hit["chunk_hash"] for row in rows for hit in row.get("retrieved") or [] if "chunk_hash" in hit})
    if not wanted:
        return {}
    try:
        with conn.transaction():
            found = conn.execute(sql.SQL("SELECT chunk_hash, text FROM {view} WHERE chunk_hash = ANY(%s)").format(
                view=sql.Identifier(index)), (wanted,)).fetchall()
    except psycopg.errors.UndefinedTable:
        return {}
    return dict(found)


def _language(text: str) -> str:
    from tasks.curation.stages.language import detect_language

    return detect_language(text)[0]


def drift_tests(window: int, inputs: list[Any], outputs: Any) -> tuple[list[Any], list[Any]]:
    """Run the drift tests; a window below the tests' minimum is recorded as not enough data, never a breach."""
    from tasks.evaluation.drift import WindowTooSmall

    def run(test: Any) -> list[Any]:
        try:
            found = test()
        except WindowTooSmall as error:
            return [f"{error} (drift tests need {window} records per window; see docs/benchmarks.md)"]
        return [t.__dict__ for t in (found if isinstance(found, list) else [found])]

    return [item for test in inputs for item in run(test)], run(outputs)


def evaluate(conn: psycopg.Connection, cfg: monitoring_config.MonitoringConfig, window_end: datetime,
             run_key: str, reports: Path, metrics_url: str | None = None, served_name: str = "llm",
             min_window: int | None = None, offline: dict[str, Any] | None = None) -> dict[str, Any]:
    """`offline`: tasks.evaluation.offline.run's figures, reported and checked here with the window's."""
    from tasks.evaluation import drift, quality

    start = window_end - timedelta(hours=cfg.window_hours)
    current = read_window(conn, start, window_end)
    reference = read_window(conn, start - timedelta(hours=cfg.reference_hours), start)
    figures: dict[str, Any] = {"window": {"start": start.isoformat(), "end": window_end.isoformat(),
                                          "requests": len(current), "reference_requests": len(reference)}}
    breaches: dict[str, str] = {}
    embeddings = None
    print(f"monitor: {len(current)} requests in [{start:%Y-%m-%d %H:%M}, {window_end:%Y-%m-%d %H:%M}), "
          f"{len(reference)} in the reference window", flush=True)
    if min(len(current), len(reference)) < cfg.min_requests:
        figures["status"] = (f"not enough data: {len(current)} requests in the current window and "
                             f"{len(reference)} in the reference; each needs at least {cfg.min_requests}")
    else:
        figures["status"] = "evaluated"
        drift_cfg, toxic_at = cfg.thresholds["drift"], cfg.thresholds["quality"]["toxic_probability"]
        scorer = quality.QualityScorer(reports / "quality-cache")
        texts = contexts(conn, cfg.index, current + reference)
        scored = {}
        for rows in (reference, current):
            ok = [r for r in rows if not r.get("error")]
            scores = scorer.score_many([(r["question"], r.get("answer") or "",
                                         [texts[h["chunk_hash"]] for h in r.get("retrieved") or []
                                          if h.get("chunk_hash") in texts]) for r in ok])
            print(f"monitor: {len(ok)} answers scored for quality ({scorer.computed} computed, the rest cached)",
                  flush=True)
            scored.update({r["id"]: s for r, s in zip(ok, scores, strict=True)})
        embeddings = tuple(scorer.embedder.encode([r["question"] for r in rows]) for rows in (reference, current))
        window = min_window or drift_cfg["min_window"]

        def answers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"answer": r.get("answer") or "", "cited": r.get("cited") or 0,
                     "toxic": scored[r["id"]].toxicity >= toxic_at if r["id"] in scored else None}
                    for r in rows if not r.get("error")]

        def words(rows: list[dict[str, Any]]) -> list[int]:
            return [len(r["question"].split()) for r in rows]

        input_tests, output = drift_tests(window, [
            lambda: drift.embedding_drift(*embeddings, alpha=drift_cfg["alpha"],
                                          permutations=drift_cfg["permutations"], seed=drift_cfg["seed"],
                                          min_window=window),
            lambda: drift.psi(words(reference), words(current), threshold=drift_cfg["psi_threshold"],
                              bins=drift_cfg["psi_bins"], name="question_length_words", min_window=window),
            lambda: drift.psi([_language(r["question"]) for r in reference],
                              [_language(r["question"]) for r in current], threshold=drift_cfg["psi_threshold"],
                              categorical=True, name="question_language", min_window=window)],
            lambda: drift.output_drift(answers(reference), answers(current), thresholds=drift_cfg["output"],
                                       min_window=window))
        figures["input_drift"], figures["output_drift"] = input_tests, output
        for check in ("input_drift", "output_drift"):
            hits = [f"{t['name']} ({t['method']}): statistic {t['statistic']:.4g}"
                    + (f", p={t['p_value']:.3g}" if t["p_value"] is not None else "") + f", threshold {t['threshold']:g}"
                    for t in figures[check] if isinstance(t, dict) and t.get("drifted")]
            if hits:
                breaches[check] = "; ".join(hits)
        mine = [scored[r["id"]] for r in current if r["id"] in scored]
        cut = cfg.thresholds["quality"]
        figures["quality"] = {"answers": len(mine),
                              "groundedness_mean": sum(q.groundedness for q in mine) / len(mine),
                              "relevance_mean": sum(q.relevance for q in mine) / len(mine),
                              "grounded_share": sum(q.groundedness >= cut["grounded_at"] for q in mine) / len(mine),
                              "relevant_share": sum(q.relevance >= cut["relevant_at"] for q in mine) / len(mine),
                              "toxicity_rate": sum(q.toxicity >= toxic_at for q in mine) / len(mine),
                              "methods": quality.METHODS}
        q, limits = figures["quality"], cfg.quality
        low = [f"grounded share {q['grounded_share']:.3f} < {limits['min_grounded_share']}"
               if q["grounded_share"] < limits["min_grounded_share"] else "",
               f"relevant share {q['relevant_share']:.3f} < {limits['min_relevant_share']}"
               if q["relevant_share"] < limits["min_relevant_share"] else "",
               f"toxicity rate {q['toxicity_rate']:.3f} > {limits['max_toxicity_rate']}"
               if q["toxicity_rate"] > limits["max_toxicity_rate"] else ""]
        if any(low):
            breaches["quality"] = "; ".join(filter(None, low))
        figures["ab"] = cost.compare_arms(current, {k: v.relevance for k, v in scored.items()}, cfg.cost)
    if current:
        perf = performance.from_requests(current)
        if metrics_url:
            perf |= performance.from_triton(metrics_url, served_name)
        figures["performance"] = perf
        figures["cost"] = cost.rollup(current, cfg.cost)
        if figures["status"] == "evaluated":
            slow = [f"{name} {perf[key]:.4g} > {cfg.performance[limit]:g}" for name, key, limit in (
                ("TTFT p95 ms", "ttft_p95_ms", "max_ttft_p95_ms"), ("latency p95 ms", "latency_p95_ms",
                                                                     "max_latency_p95_ms"),
                ("error rate", "error_rate", "max_error_rate")) if perf[key] is not None and perf[key] > cfg.performance[limit]]
            if slow:
                breaches["performance"] = "; ".join(slow)
            if figures["cost"]["total_usd"] > cfg.cost["max_window_usd"]:
                breaches["cost"] = f"window cost {figures['cost']['total_usd']:.2f} USD > {cfg.cost['max_window_usd']:g}"
    if offline is not None:
        figures["offline_eval"] = offline
        if offline.get("worse"):
            breaches["offline_eval"] = offline["worse"]
    path = report.write(reports / f"{run_key.replace('/', '__')}.html", f"monitor_llm {run_key}", figures, breaches,
                        {**figures.get("quality", {}).get("methods", {}), "input drift": "see each test's method"},
                        embeddings)
    with conn.transaction():
        conn.execute("INSERT INTO monitor_runs (run_key, window_start, window_end, requests, reference, figures, "
                     "breaches, report) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (run_key) DO UPDATE SET "
                     "at = now(), figures = EXCLUDED.figures, breaches = EXCLUDED.breaches, report = EXCLUDED.report",
                     (run_key, start, window_end, len(current), len(reference), json.dumps(figures, default=str),
                      json.dumps(breaches), str(path)))
    print(f"monitor: {figures['status']}; breaches: {breaches or 'none'}; report {path}", flush=True)
    return {"status": figures["status"], "breaches": breaches, "report": str(path)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.evaluation.steps", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("evaluate", help="evaluate one window, write the report, record the figures")
    run.add_argument("--window-end", required=True, type=datetime.fromisoformat, help="ISO time the window ends")
    run.add_argument("--run-key", required=True, help="dag id/run id (a retry replaces its own row)")
    run.add_argument("--reports", required=True, type=Path, help="directory the HTML report goes to")
    run.add_argument("--metrics-url", default=None, help="Triton's Prometheus endpoint")
    run.add_argument("--served-name", default="llm")
    run.add_argument("--min-window", type=int, default=None,
                     help="records per window the drift tests need (default: thresholds.yaml's min_window)")
    run.add_argument("--config", type=Path, default=None, help="monitoring.yaml (default: include/monitoring/)")
    run.add_argument("--repository", type=Path, default=None,
                     help="Triton's model repository root: its served version is evaluated offline against the "
                          "candidate (omitted: no offline evaluation)")
    run.add_argument("--candidate", default=None,
                     help="models:/<name>/<version or alias> to compare (default: the served model's `candidate`)")
    run.add_argument("--data-ref", default="main", help="lakeFS ref of the curated corpus (default: main)")
    return p


def main(argv: list[str] | None = None) -> int:
    from tasks.common import platform_db

    args = parser().parse_args(argv)
    try:
        cfg = monitoring_config.load(args.config)
    except monitoring_config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    offline_figures = None
    if args.repository:
        from tasks.common.versioned_data import LakeFSEndpoint
        from tasks.evaluation import offline

        try:
            offline_figures = offline.run(cfg.offline, LakeFSEndpoint.from_env(), args.repository, args.served_name,
                                          os.environ.get("MLFLOW_TRACKING_URI"), args.candidate, args.data_ref)
        except offline.OfflineEvalError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    with platform_db.connect(platform_db.dsn_from_env()) as conn:
        result = evaluate(conn, cfg, args.window_end, args.run_key, args.reports, args.metrics_url, args.served_name,
                          args.min_window, offline_figures)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
