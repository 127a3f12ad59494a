"""The answer path: question -> embed -> retrieve top-k -> versioned prompt -> streamed generation on Triton ->
answer with cited chunks; every request, failed ones too, is a row of the `requests` table.

    python -m tasks.rag.answer "How do I join path components?" --user alice [--k 4] [--mode vector]

Connections come from flags or the environment (LLMOPS_PLATFORM_DSN, LLMOPS_TRITON_URL, LLMOPS_TRITON_GRPC,
LLMOPS_TRITON_MODEL_REPOSITORY). `tokens_out` counts streamed responses (one per decode step that added text).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tasks.rag import config as rag_config
from tasks.rag import prompts as prompt_store
from tasks.rag.retrieve import Hit, retrieve
from tasks.rag.store import live

MAX_QUESTION_CHARS = 2000


class QuestionError(ValueError):
    """A question the path will not answer; the message names the rule."""


@dataclass
class Answer:
    request_id: int
    text: str
    citations: list[dict[str, Any]]  # the chunks the prompt carried, numbered as in the prompt
    prompt: dict[str, Any]  # id, version, variant
    index_version: int
    model_version: str | None
    ttft_ms: float
    latency_ms: float


def check_question(question: str) -> str:
    question = (question or "").strip()
    if not question:
        raise QuestionError("question: empty; ask something")
    if len(question) > MAX_QUESTION_CHARS:
        raise QuestionError(f"question: {len(question)} characters, more than the {MAX_QUESTION_CHARS} allowed")
    return question


@dataclass
class AnswerPath:
    """What answering needs, loaded once: the platform database, the embedding model, the served LLM."""

    dsn: str
    triton_http: str
    triton_grpc: str
    served_name: str = "llm"
    index_name: str = "rag_chunks"
    prompt_id: str = "rag_answer"
    max_tokens: int = 48
    model_repository: str | None = None  # Triton's models/ dir, where it is local: to count prompt tokens
    _embedder: Any = None
    _tokenizers: dict[str, Any] = field(default_factory=dict)

    def embedder(self) -> Any:
        if self._embedder is None:
            from tasks.rag.embedding import Embedder

            self._embedder = Embedder.from_config(rag_config.load().embedding)
        return self._embedder

    def served_tokenizer(self, control: Any) -> Any:
        """The served version's own tokenizer, when the model repository is on this machine; else None."""
        if not self.model_repository:
            return None
        versions = control.model_config(self.served_name).get("version_policy", {}).get("specific", {})
        version = max((int(v) for v in versions.get("versions", [])), default=None)
        hf = Path(self.model_repository) / self.served_name / str(version) / "hf"
        if version is None or not hf.is_dir():
            return None
        if str(hf) not in self._tokenizers:
            from transformers import AutoConfig, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(hf)
            tokenizer.positions = int(AutoConfig.from_pretrained(hf).max_position_embeddings)
            self._tokenizers[str(hf)] = tokenizer
        return self._tokenizers[str(hf)]

    def answer(self, question: str, user: str, k: int = 4, mode: str = "hybrid") -> Answer:
        from tasks.common import platform_db
        from tasks.serving.client import TritonControl, generate

        began = time.perf_counter()
        row: dict[str, Any] = {"user_id": user or "anonymous", "question": question, "retrieval_mode": mode,
                               "index_name": self.index_name, "served_model": self.served_name}
        with platform_db.connect(self.dsn) as conn:
            try:
                question = check_question(question)
                prompt = prompt_store.load(self.prompt_id).for_user(row["user_id"])
                row |= {"prompt_id": prompt.id, "prompt_version": prompt.version, "prompt_variant": prompt.variant}
                index_cfg = rag_config.load().index
                serving = live(conn, self.index_name)
                if serving is None:
                    raise LookupError(f"index {self.index_name!r} has no live version yet: run reindex_rag first")
                row["index_version"] = serving.version
                hits = self._retrieve(conn, question, k, index_cfg, mode)
                row["retrieved"] = [{"chunk_hash": h.chunk_hash, "doc_id": h.doc_id, "source": h.source,
                                     "score": round(h.score, 6)} for h in hits]
                control = TritonControl(self.triton_http)
                row["model_version"] = served_version(control, self.served_name)
                tokenizer = self.served_tokenizer(control)
                count = (lambda t: len(tokenizer(t).input_ids)) if tokenizer else None
                fits = (lambda t: count(t) + self.max_tokens <= tokenizer.positions) if tokenizer else None
                text, cited = prompt.render(question, [h.text for h in hits], fits)
                row["cited"] = cited
                row["tokens_in"] = count(text) if count else None
                result = generate(self.triton_grpc, self.served_name, text, max_tokens=self.max_tokens)
                row |= {"answer": result.text, "tokens_out": len(result.token_times), "ttft_ms": result.ttft * 1000,
                        "latency_ms": (time.perf_counter() - began) * 1000}
            except Exception as error:
                row |= {"error": f"{type(error).__name__}: {error}", "latency_ms": (time.perf_counter() - began) * 1000}
                log_request(conn, row)
                raise
            request_id = log_request(conn, row)
        return Answer(request_id, row["answer"], [
            {"n": n, **{k: v for k, v in asdict(h).items() if k != "text"}, "text": h.text[:200]}
            for n, h in enumerate(hits[:cited], start=1)],
            {"id": prompt.id, "version": prompt.version, "variant": prompt.variant}, serving.version,
            row["model_version"], row["ttft_ms"], row["latency_ms"])

    def _retrieve(self, conn: psycopg.Connection, question: str, k: int, index_cfg: Any, mode: str) -> list[Hit]:
        vector = self.embedder().encode([question])[0]
        if mode == "vector":
            return retrieve(conn, self.index_name, vector, k, index_cfg)
        return retrieve(conn, self.index_name, vector, k, index_cfg, mode=mode, text=question)


def served_version(control: Any, served_name: str) -> str | None:
    """The registered version behind the served name, from the config Triton has loaded (its lineage params)."""
    params = control.model_config(served_name).get("parameters", {})
    found = params.get("registered_version", {}).get("string_value")
    model = params.get("registered_model", {}).get("string_value")
    return f"{model}/{found}" if found else None


def log_request(conn: psycopg.Connection, row: dict[str, Any]) -> int:
    """Insert one request; NUL characters (which a model can emit, and Postgres text cannot hold) become U+FFFD."""
    columns = list(row)
    values = [json.dumps(v) if c == "retrieved" else v.replace("\x00", "\ufffd") if isinstance(v, str) else v
              for c, v in row.items()]
    with conn.transaction():
        found = conn.execute(f"INSERT INTO requests ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
                             "RETURNING id", values).fetchone()
    return int(found[0])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.rag.answer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question")
    p.add_argument("--user", default=os.environ.get("USER", "cli"), help="who asks (picks the prompt's A/B arm)")
    p.add_argument("--k", type=int, default=4, help="chunks to retrieve")
    p.add_argument("--mode", choices=["vector", "fulltext", "hybrid"], default="hybrid",
                   help="retrieval: hybrid (vector + full text, fused) scored best on the labelled set")
    p.add_argument("--index", default="rag_chunks")
    p.add_argument("--served-name", default="llm", help="the Triton model to generate with")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--dsn", default=os.environ.get("LLMOPS_PLATFORM_DSN"), help="platform Postgres")
    p.add_argument("--triton-url", default=os.environ.get("LLMOPS_TRITON_URL"), help="Triton HTTP")
    p.add_argument("--triton-grpc", default=os.environ.get("LLMOPS_TRITON_GRPC"), help="Triton gRPC host:port")
    p.add_argument("--model-repository", default=os.environ.get("LLMOPS_TRITON_MODEL_REPOSITORY"),
                   help="Triton's models/ directory, if local (prompt token counts)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    missing = [flag for flag, value in (("--dsn", args.dsn), ("--triton-url", args.triton_url),
                                        ("--triton-grpc", args.triton_grpc)) if not value]
    if missing:
        print(f"error: set {', '.join(missing)} (or their environment variables)", file=sys.stderr)
        return 2
    path = AnswerPath(args.dsn, args.triton_url, args.triton_grpc, args.served_name, args.index,
                      max_tokens=args.max_tokens, model_repository=args.model_repository)
    try:
        answer = path.answer(args.question, args.user, args.k, args.mode)
    except (QuestionError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(answer), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
