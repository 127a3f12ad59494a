"""The answer path against real services: pgvector index with real embeddings, a model served by a real Triton;
the answer is what the served model generates for the versioned prompt, it cites the chunks the prompt carried,
and every request, failed ones too, is logged with prompt version, index version and model version."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import triton
from tasks.common import platform_db
from tasks.rag import config as rag_config
from tasks.rag.answer import AnswerPath, QuestionError
from tasks.rag.prompts import load
from tasks.serving.client import generate
from tests.tasks.rag.corpus import index_records, sample_records
from tests.tasks.serving import models

CFG = rag_config.load()
SERVED = "answer-llm"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[triton.Standalone, Path]]:
    home = tmp_path_factory.mktemp("answer-triton")
    with triton.standalone(home) as server:
        models.serve(server.repository_root, server.http, SERVED, models.tiny_llama(home / "tiny", positions=512))
        yield server, server.repository_root / "models"


@pytest.fixture(scope="module")
def path(platform_dsn: str, served) -> AnswerPath:
    server, models_dir = served
    answerer = AnswerPath(platform_dsn, server.http, server.grpc, SERVED, f"rag_{uuid.uuid4().hex[:8]}",
                          max_tokens=12, model_repository=str(models_dir))
    answerer.records = sample_records(12)
    index_records(platform_dsn, answerer.index_name, answerer.records, answerer.embedder())
    return answerer


def logged(dsn: str, request_id: int) -> dict:
    with platform_db.connect(dsn) as conn:
        cursor = conn.execute("SELECT * FROM requests WHERE id = %s", (request_id,))
        return dict(zip([d.name for d in cursor.description], cursor.fetchone(), strict=True))


def test_an_answer_is_the_served_generation_for_the_prompt_and_cites_what_it_carried(path, served):
    record = path.records[3]
    question = " ".join(record["text"].split()[:6])  # words of one document: it should be retrieved first
    answer = path.answer(question, user="alice", k=3, mode="vector")
    prompt = load("rag_answer").for_user("alice")
    assert answer.prompt == {"id": "rag_answer", "version": prompt.version, "variant": prompt.variant}
    assert answer.citations and answer.citations[0]["doc_id"] == record["id"]
    row = logged(path.dsn, answer.request_id)
    assert answer.text == row["answer"] == generate(served[0].grpc, SERVED, _prompt_of(path, question, "alice"),
                                                    max_tokens=12).text
    assert row["prompt_version"] == prompt.version and row["prompt_variant"] == prompt.variant
    assert row["index_version"] == answer.index_version and row["model_version"] == "tiny/7"
    assert [r["doc_id"] for r in row["retrieved"]][0] == record["id"] and row["cited"] == len(answer.citations)
    assert row["tokens_in"] + 12 <= 512 and row["tokens_out"] >= 1 and row["ttft_ms"] > 0 and row["error"] is None


def test_hybrid_retrieval_is_the_default_and_is_logged(path):
    record = path.records[5]
    answer = path.answer(" ".join(record["text"].split()[:12]), user="frank", k=3)
    assert record["id"] in [c["doc_id"] for c in answer.citations]
    assert logged(path.dsn, answer.request_id)["retrieval_mode"] == "hybrid"


def _prompt_of(path: AnswerPath, question: str, user: str) -> str:
    """The prompt the path sent, rebuilt from what it retrieved (full chunk texts, not the citation excerpts)."""
    from transformers import AutoTokenizer

    from tasks.rag.retrieve import retrieve

    vector = path.embedder().encode([question])[0]
    with platform_db.connect(path.dsn) as conn:
        hits = retrieve(conn, path.index_name, vector, 3, CFG.index)
    tokenizer = AutoTokenizer.from_pretrained(path.model_repository + f"/{SERVED}/1/hf")
    fits = lambda t: len(tokenizer(t).input_ids) + 12 <= 512  # noqa: E731 - the test model's 512 positions
    return load("rag_answer").for_user(user).render(question, [h.text for h in hits], fits)[0]


@pytest.mark.parametrize(("question", "message"), [("   ", "empty"), ("x" * 2001, "more than the 2000")])
def test_a_bad_question_is_refused_and_still_logged(path, question, message):
    count = "SELECT count(*) FROM requests WHERE user_id = 'bob' AND error LIKE %s"
    with platform_db.connect(path.dsn) as conn:
        before = conn.execute(count, (f"%{message}%",)).fetchone()[0]
    with pytest.raises(QuestionError, match=message):
        path.answer(question, user="bob")
    with platform_db.connect(path.dsn) as conn:
        assert conn.execute(count, (f"%{message}%",)).fetchone()[0] == before + 1


def test_a_model_that_is_not_served_fails_the_request_with_the_reason_logged(path):
    broken = AnswerPath(path.dsn, path.triton_http, path.triton_grpc, "no-such-model", path.index_name)
    broken._embedder = path.embedder()
    with pytest.raises(Exception, match="no-such-model"):
        broken.answer("How do I open a file?", user="carol")
    with platform_db.connect(path.dsn) as conn:
        error, = conn.execute("SELECT error FROM requests WHERE user_id = 'carol' ORDER BY id DESC LIMIT 1").fetchone()
    assert "no-such-model" in error



def test_text_postgres_cannot_hold_is_logged_with_a_replacement_character(path):
    from tasks.rag.answer import log_request

    with platform_db.connect(path.dsn) as conn:
        request_id = log_request(conn, {"user_id": "erin", "question": "q", "answer": "a\x00b"})
    assert logged(path.dsn, request_id)["answer"] == "a\ufffdb"
