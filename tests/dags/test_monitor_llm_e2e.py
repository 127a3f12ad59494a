"""monitor_llm on the real stack through the REST API, over request-log windows planted in the platform database:
a window whose queries drifted fails its named check, posts to the webhook and emits the reindex Asset; a window
like its reference does none of that; an empty window says "not enough data" and fails nothing."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from stack import postgres
from stack.airflow_api import AirflowClient
from stack.process import free_port
from tasks.common import platform_db
from tasks.rag.answer import log_request
from tasks.rag.embedding import Embedder
from tests.stack.harness import RunningStack
from tests.tasks.rag.corpus import index_records, sample_records

pytestmark = pytest.mark.slow
DAG = "monitor_llm"
OFF_TOPIC = ["What is a good temperature to bake sourdough bread?", "How long should pasta boil?",
             "Which wine goes with grilled salmon?", "How do I keep basil fresh?", "Is it safe to refreeze chicken?",
             "What makes a risotto creamy?", "How much salt goes into pizza dough?", "Why did my cake sink?",
             "Can I replace butter with olive oil in cookies?", "How do I caramelise onions?"]


class Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        Webhook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def stack(running_stack: RunningStack):
    """The shared stack with an index of real records, a webhook receiver, and the DAG paused again afterwards."""
    dsn = postgres.dsn(running_stack.cfg, "platform")
    records = sample_records(40)
    index_records(dsn, "rag_chunks", records, Embedder("all-MiniLM-L6-v2", 384, 32))
    server = HTTPServer(("127.0.0.1", free_port()), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = AirflowClient.for_stack(running_stack.cfg)
    client.wait_for_dag(DAG)
    yield client, dsn, records, f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    client._call("PATCH", f"/dags/{DAG}", json={"is_paused": True})


def plant(dsn: str, records: list[dict], end: datetime, current: list[str] | None = None) -> None:
    """30 grounded requests in the reference window (a day before `end`) and 30 in the hour before `end` about the
    same indexed records, in another order (a window like its reference); `current` questions replace the current
    window's (a planted query drift)."""
    rng = random.Random(end.timestamp())
    picked = [records[n % len(records)] for n in range(30)]
    with platform_db.connect(dsn) as conn:
        chunks = dict(conn.execute("SELECT doc_id, chunk_hash FROM rag_chunks").fetchall())
        for hours_before, questions in ((26, None), (0.5, current)):
            rng.shuffle(picked)
            for n, record in enumerate(picked):
                question = questions[n % len(questions)] if questions else " ".join(record["text"].split()[:8]) + "?"
                row_id = log_request(conn, {
                    "user_id": f"user{n % 7}", "question": question, "prompt_id": "rag_answer", "prompt_version": 1,
                    "prompt_variant": "ab"[n % 2], "retrieved": [{"chunk_hash": chunks[record["id"]],
                                                                  "doc_id": record["id"], "score": 0.8}],
                    "cited": 1, "answer": record["text"][:160], "tokens_in": 60, "tokens_out": 24,
                    "ttft_ms": 20 + rng.random() * 5, "latency_ms": 300 + rng.random() * 50, "model_version": "t/1"})
                at = end - timedelta(hours=hours_before, minutes=rng.random() * 20)
                conn.execute("UPDATE requests SET at = %s WHERE id = %s", (at, row_id))


def run(client: AirflowClient, end: datetime, webhook: str) -> tuple[str, dict[str, str | None], str]:
    # 30 records per window: the drift tests' minimum is lowered to match (the default, 400, is what bench/drift.py
    # found for subtle shifts; these are a whole new topic, or the same questions)
    run_id = client.trigger(DAG, {"window_end": end.isoformat(), "webhook": webhook, "min_window": 30})
    state = client.wait(DAG, run_id, timeout=900)
    return state, client.task_states(DAG, run_id), run_id


def test_drifted_queries_fail_the_check_notify_and_request_a_reindex(stack):
    client, dsn, records, webhook = stack
    end = datetime(2026, 1, 10, 12, tzinfo=UTC)
    plant(dsn, records, end, current=OFF_TOPIC)
    Webhook.received.clear()
    state, tasks, run_id = run(client, end, webhook)
    assert state == "failed" and tasks["check_input_drift"] == "failed", tasks
    assert tasks["request_reindex"] == "success" and tasks["notify"] == "success"
    assert "input_drift" in Webhook.received[-1]["breaches"]
    events = client._call("GET", "/assets/events", params={"source_dag_id": DAG, "source_run_id": run_id})
    uris = {event["uri"] for event in events["asset_events"]}
    assert "llmops://monitoring/reindex_requested" in uris
    assert "embedding" in client.task_log(DAG, run_id, "check_input_drift")


def test_a_window_like_its_reference_breaches_nothing(stack):
    client, dsn, records, webhook = stack
    end = datetime(2026, 2, 10, 12, tzinfo=UTC)
    plant(dsn, records, end)
    Webhook.received.clear()
    state, tasks, _ = run(client, end, webhook)
    assert state == "success", tasks
    assert tasks["request_reindex"] == tasks["request_finetune"] == "skipped" and Webhook.received == []


def test_an_empty_window_says_not_enough_data(stack):
    client, _, _, webhook = stack
    state, tasks, run_id = run(client, datetime(2020, 1, 1, tzinfo=UTC), webhook)
    assert state == "success", tasks
    assert "not enough data: 0 requests" in client.task_log(DAG, run_id, "evaluate")
