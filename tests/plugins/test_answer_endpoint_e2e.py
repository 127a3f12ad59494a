"""The answer endpoint of the platform's Airflow plugin on the real API server: signed-in users only, input checked
before anything runs, and a question answered through the index and Triton with citations and a logged request."""

from __future__ import annotations

import uuid

import httpx
import pytest

from stack import airflow, postgres
from stack.airflow_api import AirflowClient
from tasks.common import platform_db
from tasks.rag.embedding import Embedder
from tests.stack.harness import RunningStack
from tests.tasks.rag.corpus import index_records, sample_records
from tests.tasks.serving import models

pytestmark = pytest.mark.slow
SERVED = "endpoint-llm"


@pytest.fixture(scope="module")
def client(running_stack: RunningStack) -> AirflowClient:
    return AirflowClient.for_stack(running_stack.cfg)


@pytest.fixture(scope="module")
def ready(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An index of real records in the stack's platform database and a model served by the stack's Triton."""
    cfg = running_stack.cfg
    index = f"rag_{uuid.uuid4().hex[:8]}"
    records = sample_records(10)
    index_records(postgres.dsn(cfg, "platform"), index, records, Embedder("all-MiniLM-L6-v2", 384, 32))
    models.serve(cfg.home / "triton", f"http://127.0.0.1:{cfg.triton_http_port}", SERVED,
                 models.tiny_llama(tmp_path_factory.mktemp("endpoint") / "tiny", positions=512))
    return {"index": index, "model": SERVED, "records": records}


def test_anonymous_callers_are_refused(running_stack: RunningStack):
    response = httpx.post(f"{airflow.api_url(running_stack.cfg)}/llmops/answer", json={"question": "hi"}, timeout=30)
    assert response.status_code == 401


@pytest.mark.parametrize(("question", "message"), [("  ", "question is empty"), ("x" * 2001, "at most 2000")])
def test_an_empty_or_oversized_question_is_a_422_naming_the_rule(client, question, message):
    response = client.answer(question)
    assert response.status_code == 422 and message in response.text


def test_a_question_is_answered_with_citations_and_logged_under_the_user(client, ready, running_stack):
    record = ready["records"][2]
    response = client.answer(record["text"][:80], k=3, index=ready["index"], model=ready["model"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["citations"][0]["doc_id"] == record["id"] and body["model_version"] == "tiny/7"
    with platform_db.connect(postgres.dsn(running_stack.cfg, "platform")) as conn:
        user, variant, answer = conn.execute("SELECT user_id, prompt_variant, answer FROM requests WHERE id = %s",
                                             (body["request_id"],)).fetchone()
    assert user == airflow.ADMIN_USER and variant == body["prompt"]["variant"]
    assert answer == body["text"].replace("\x00", "\ufffd")  # what Postgres text can hold


def test_an_index_that_does_not_exist_is_a_503_naming_it(client, ready):
    response = client.answer("How do I open a file?", index="rag_missing", model=ready["model"])
    assert response.status_code == 503 and "rag_missing" in response.text
