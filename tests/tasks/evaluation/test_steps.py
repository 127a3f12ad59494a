"""The monitoring step over request-log windows in a real Postgres: a planted query drift is a named breach with
its numbers, a window like its reference breaches nothing, too few requests is "not enough data"; the report is
written and the figures are recorded per run."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from tasks.common import platform_db
from tasks.evaluation import config
from tasks.evaluation.steps import evaluate
from tasks.rag.answer import log_request

END = datetime(2026, 3, 1, 12, tzinfo=UTC)
TOPIC = ["How do I join path components?", "How do I read a file line by line?", "How do I sort a list in place?",
         "How do I start a thread?", "How do I parse JSON?", "How do I copy a directory tree?"]
OFF_TOPIC = ["What is a good temperature to bake sourdough bread?", "How long should pasta boil?",
             "Which wine goes with grilled salmon?", "How do I keep basil fresh?", "Why did my cake sink?"]


def plant(dsn: str, end: datetime, reference: list[str], current: list[str], n: int = 30) -> None:
    rng = random.Random(end.timestamp())
    with platform_db.connect(dsn) as conn:
        for hours_before, questions in ((26, reference), (0.5, current)):
            for i in range(n):
                question = questions[i % len(questions)]
                row_id = log_request(conn, {
                    "user_id": f"u{i % 5}", "question": question, "prompt_id": "rag_answer", "prompt_version": 1,
                    "prompt_variant": "ab"[i % 2], "answer": f"To answer '{question}', use the documented function.",
                    "cited": 1, "tokens_in": 50, "tokens_out": 20, "ttft_ms": 15.0 + rng.random(),
                    "latency_ms": 200.0 + rng.random() * 20, "model_version": "tiny/1"})
                conn.execute("UPDATE requests SET at = %s WHERE id = %s",
                             (end - timedelta(hours=hours_before, minutes=rng.random() * 20), row_id))


@pytest.fixture(scope="module")
def cfg() -> config.MonitoringConfig:
    return config.load()


def run(dsn: str, cfg, end: datetime, tmp_path, **kwargs) -> dict:
    with platform_db.connect(dsn) as conn:
        return evaluate(conn, cfg, end, f"test/{end:%Y%m%d}", tmp_path, min_window=30, **kwargs)


def test_a_planted_query_drift_is_a_named_breach_with_its_numbers(platform_dsn, cfg, tmp_path):
    plant(platform_dsn, END, TOPIC, OFF_TOPIC)
    result = run(platform_dsn, cfg, END, tmp_path)
    assert result["status"] == "evaluated"
    assert "query_embedding" in result["breaches"]["input_drift"] and "p=" in result["breaches"]["input_drift"]
    assert "report" in result and (tmp_path / "test__20260301.html").read_text().count("<img") >= 2
    with platform_db.connect(platform_dsn) as conn:
        figures, breaches = conn.execute("SELECT figures, breaches FROM monitor_runs WHERE run_key = %s",
                                         ("test/20260301",)).fetchone()
    assert breaches == result["breaches"] and figures["window"]["requests"] == 30
    assert figures["cost"]["total_usd"] > 0 and set(figures["ab"]["arms"]) == {"a", "b"}


def test_a_window_like_its_reference_breaches_nothing(platform_dsn, cfg, tmp_path):
    end = END + timedelta(days=10)
    plant(platform_dsn, end, TOPIC, TOPIC)
    result = run(platform_dsn, cfg, end, tmp_path)
    assert result["status"] == "evaluated" and "input_drift" not in result["breaches"]
    assert "output_drift" not in result["breaches"] and "performance" not in result["breaches"]


def test_too_few_requests_is_not_enough_data_and_no_breach(platform_dsn, cfg, tmp_path):
    result = run(platform_dsn, cfg, datetime(2020, 1, 1, tzinfo=UTC), tmp_path)
    assert result["status"].startswith("not enough data: 0 requests") and result["breaches"] == {}


def test_drift_tests_below_their_window_say_so_instead_of_alarming(platform_dsn, cfg, tmp_path):
    end = END + timedelta(days=20)
    plant(platform_dsn, end, TOPIC, OFF_TOPIC)
    with platform_db.connect(platform_dsn) as conn:
        result = evaluate(conn, cfg, end, "test/small", tmp_path)  # thresholds.yaml's min_window: 400 > 30
        figures, = conn.execute("SELECT figures FROM monitor_runs WHERE run_key = 'test/small'").fetchone()
    assert "input_drift" not in result["breaches"]
    assert "not enough data" in figures["input_drift"][0] and "400" in figures["input_drift"][0]


def test_a_worse_candidate_breaches_offline_eval_even_without_requests(platform_dsn, cfg, tmp_path):
    scores = {"serving": {"model": "tiny/1", "byte_perplexity": 1.4, "accuracy": 0.5},
              "candidate": {"model": "tiny/2", "byte_perplexity": 1.9, "accuracy": 0.2}}
    worse = "candidate tiny/2 is worse than serving tiny/1: held-out perplexity per byte 1.9000 vs serving 1.4000"
    result = run(platform_dsn, cfg, datetime(2021, 1, 1, tzinfo=UTC), tmp_path,
                 offline={"models": scores, "worse": worse})
    assert result["status"].startswith("not enough data") and result["breaches"] == {"offline_eval": worse}
    assert "Offline evaluation: serving vs candidate" in (tmp_path / "test__20210101.html").read_text()
    with platform_db.connect(platform_dsn) as conn:
        figures, = conn.execute("SELECT figures FROM monitor_runs WHERE run_key = 'test/20210101'").fetchone()
    assert figures["offline_eval"]["models"]["candidate"]["accuracy"] == 0.2
