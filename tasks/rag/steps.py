"""reindex_rag's steps as a CLI, so the same code runs in the Airflow worker, a local subprocess or a pod.

  validate  resolve the ref to a commit, parse the corpus there, check config and database; print the plan
  reindex   bring the index in step with the corpus at a commit (incremental or full), print the outcome
  query     top-k chunks for a question from the live index (optionally one source)
  status    the index's versions: which commit each reflects, since when, built how
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg

from tasks.common import platform_db
from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo
from tasks.rag import config as rag_config
from tasks.rag import corpus, store
from tasks.rag.chunking import Chunker, model_tokenizer
from tasks.rag.config import RagConfig
from tasks.rag.embedding import Embedder, model_path
from tasks.rag.reindex import plan, reindex
from tasks.rag.retrieve import retrieve


def log(message: str) -> None:
    print(f"[rag] {message}", flush=True)


def chunker_for(cfg: RagConfig) -> Chunker:
    return Chunker(cfg.chunker, model_tokenizer(str(model_path() / "tokenizer.json")))


def embedder_for(cfg: RagConfig) -> Callable[[], Embedder]:
    return partial(Embedder.from_config, cfg.embedding)


def validate(endpoint: LakeFSEndpoint, dsn: str, repo: str, ref: str, index_name: str, cfg: RagConfig,
             full_rebuild: bool) -> dict[str, Any]:
    """Everything checkable before any embedding: the names, the commit, every corpus record, the database."""
    rag_config.require_index_name(index_name)
    versioned = VersionedRepo(endpoint, repo)
    commit_id = versioned.head(ref)
    docs = corpus.read(versioned, commit_id, cfg.corpus_path)
    if not docs:
        raise corpus.CorpusError(f"lakefs://{repo}/{commit_id[:12]}/{cfg.corpus_path} has no records to index")
    with platform_db.connect(dsn) as conn:
        serving = store.live(conn, index_name)
    mode, reason = plan(serving, repo, cfg.embedding.model, cfg, full_rebuild)
    return {"repo": repo, "commit_id": commit_id, "index": index_name, "documents": len(docs), "mode": mode,
            "reason": reason, "chunker": cfg.chunker.name}


def status(conn: psycopg.Connection, index_name: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT version, state, repo, commit_id, embedding_model, chunker, storage, hnsw, rows, "
                        "created_at, refreshed_at FROM rag_indexes WHERE index_name = %s ORDER BY version",
                        (index_name,))
    names = [column.name for column in rows.description]
    return [dict(zip(names, row, strict=True)) for row in rows.fetchall()]


def _optional(value: str) -> str | None:
    return value or None


def _optional_int(value: str) -> int | None:
    return int(value) if value else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.rag.steps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Database from {platform_db.ENV_DSN}; lakeFS from LAKECTL_SERVER_ENDPOINT_URL, "
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID and LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY. Defaults: include/rag/rag.yaml.")
    commands = parser.add_subparsers(dest="step", required=True)
    built = []
    for name, help_text in (("validate", "check a run's inputs and print its plan (no embedding)"),
                            ("reindex", "incremental or full reindex to a commit")):
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--repo", required=True, help="lakeFS repository holding the curated corpus")
        command.add_argument("--ref", required=True, help="commit id, branch or tag to index")
        command.add_argument("--full-rebuild", action=argparse.BooleanOptionalAction, default=False,
                             help="build a new version even if incremental would do")
        command.add_argument("--gate-mode", type=_optional, help="vector | fulltext | hybrid: how the retrieval "
                                                                "gate searches (default: rag.yaml's evaluation.gate)")
        built.append(command)
    query = commands.add_parser("query", help="top-k chunks for a question from the live index")
    query.add_argument("text", help="the question")
    query.add_argument("--k", type=int, default=5)
    query.add_argument("--source", help="only chunks of this source (iterative index scan)")
    query.add_argument("--mode", choices=["vector", "fulltext", "hybrid"], default="hybrid")
    status_cmd = commands.add_parser("status", help="the index's versions and what each reflects")
    for command in (*built, query, status_cmd):
        command.add_argument("--index", default="rag_chunks", help="index name (its view's name)")
        # an empty value means "as configured", so a DAG can pass a null Param through a template unchanged
        command.add_argument("--chunker", type=_optional, help="a chunker named in rag.yaml (default: default_chunker)")
        command.add_argument("--batch-size", type=_optional_int, help="embedding batch size")
        command.add_argument("--storage", type=_optional, help="vector | halfvec: vector type of a new version")
    args = parser.parse_args(argv)

    cfg = rag_config.load(args.chunker, args.batch_size, args.storage, gate_mode=getattr(args, "gate_mode", None))
    dsn = platform_db.dsn_from_env()
    if args.step == "validate":
        result: Any = validate(LakeFSEndpoint.from_env(), dsn, args.repo, args.ref, args.index, cfg,
                               args.full_rebuild)
    elif args.step == "reindex":
        versioned = VersionedRepo(LakeFSEndpoint.from_env(), args.repo)
        with platform_db.connect(dsn) as conn:
            result = reindex(conn, versioned, versioned.head(args.ref), args.index, cfg, chunker_for(cfg),
                             embedder_for(cfg), args.full_rebuild, log).to_dict()
    elif args.step == "query":
        vector = embedder_for(cfg)().encode([args.text])[0]
        with platform_db.connect(dsn) as conn:
            result = [hit.__dict__ for hit in retrieve(conn, args.index, vector, args.k, cfg.index, args.source,
                                                       mode=args.mode, text=args.text)]
    else:
        with platform_db.connect(dsn) as conn:
            result = status(conn, args.index)
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
