"""The answer path as an endpoint of the platform's Airflow plugin: POST /llmops/answer, for signed-in users only.

Authentication is Airflow's own (the API server's JWT, as a Bearer token or the UI's cookie): anonymous callers get
401. The body is validated before anything runs: an empty or oversized question is a 422 naming the field and the
rule. The work is tasks.rag.answer's; every request lands in the `requests` table with the caller's user name.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any, Literal

from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, Field, field_validator

from tasks.rag.answer import MAX_QUESTION_CHARS

app = FastAPI(title="LLMOps answer path", description=__doc__)


class Question(BaseModel):
    question: str = Field(max_length=MAX_QUESTION_CHARS, description="what to answer from the indexed corpus")
    k: int = Field(4, ge=1, le=20, description="chunks to retrieve")
    mode: Literal["vector", "fulltext", "hybrid"] = "hybrid"
    index: str = Field("rag_chunks", pattern="^[a-z][a-z0-9_]{2,40}$", description="the RAG index (its view)")
    model: str = Field("llm", pattern="^[a-z][a-z0-9_-]{1,40}$", description="the Triton model name to generate with")

    @field_validator("question")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question is empty: ask something")
        return value.strip()


@functools.lru_cache(maxsize=8)
def _path(index: str, model: str) -> Any:
    """One AnswerPath per index and model: the embedding model loads once per API server process."""
    import os

    from plugins.connections import TRITON, http_url, postgres_dsn, triton_grpc
    from tasks.rag.answer import AnswerPath

    return AnswerPath(postgres_dsn(), http_url(TRITON), triton_grpc(), model, index,
                      model_repository=os.environ.get("LLMOPS_TRITON_MODEL_REPOSITORY"))


@app.post("/answer")
def answer(body: Question, user: Any = Depends(get_user)) -> dict[str, Any]:
    from tasks.rag.answer import QuestionError

    try:
        result = _path(body.index, body.model).answer(body.question, user.get_name(), body.k, body.mode)
    except QuestionError as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    except LookupError as error:
        raise HTTPException(status_code=503, detail=str(error)) from error
    return asdict(result)
