"""RAG benchmark (issue 11): embedding throughput, pgvector at scale, incremental vs full reindex, and the labelled
set's retrieval scores per mode, each comparison in one run, on a private PostgreSQL 18 + pgvector and lakeFS emulator
(started on free ports in a temporary directory, stopped at the end).

    .venv/bin/python bench/rag.py                                   # the issue's run: 100k vectors
    .venv/bin/python bench/rag.py --vectors 20000                   # a quick check of the whole run
    .venv/bin/python bench/rag.py --parts vectors --vectors 1000000 # 1M (the HNSW builds take tens of minutes here)

Parts (--parts, default all):
  corpus   The sample corpus (tasks.curation.sample_corpus's clean documents: stdlib docstrings, --docs 1500, seed 7),
           committed on lakeFS as curated/corpus.jsonl and fully reindexed by tasks.rag.reindex with the real model
           (loaded beforehand, so neither reindex pays for it). The labelled set (include/rag/labelled_queries.yaml)
           is scored on that index, recall@k and MRR of the documents of the top k chunks, with vector, full-text and
           hybrid retrieval. Embedding throughput on the same chunks: the pipeline (Embedder.encode on slices, as
           reindex calls it) against a bare SentenceTransformer.encode in one call, fp32 and a bf16 copy of the model
           (cosine to the pipeline's vectors), in alternating rounds. Then 1% of the documents are edited, committed,
           and the incremental reindex is timed against the full one.
  vectors  --vectors N unit vectors inserted through tasks.rag.store (COPY), indexed (HNSW + GIN, store.build_hnsw),
           swapped in and queried through tasks.rag.retrieve, once as `vector` and once as `halfvec`: insert and build
           time, recall@10 against exact (numpy, fp32) top 10, p50/p95 latency of --queries queries per ef_search.
           --vector-source mix (default): each vector a random blend of two real chunk embeddings of the sample corpus
           plus noise (the corpus part's, or its cache), so neighbourhoods look like real embeddings' do; random:
           i.i.d. Gaussian directions, the hardest case for HNSW (nothing is near anything).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.rag import config as rag_config  # noqa: E402

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llmops-bench"
CORPUS_PATH = "curated/corpus.jsonl"
SOURCE = "python-stdlib"


@dataclass
class Results:
    tables: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def table(self, title: str, header: Sequence[str], rows: Sequence[Sequence]) -> None:
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        self.tables.append("\n".join(lines))
        print("\n" + self.tables[-1] + "\n", flush=True)


def cache_path(args: argparse.Namespace) -> Path:
    """The sample corpus's chunk embeddings (ordered by chunk hash), as the corpus part stored them."""
    return CACHE_DIR / f"rag-sample-embeddings-docs{args.docs}-seed{args.seed}.npy"


def log(message: str) -> None:
    print(f"[bench rag {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_average() -> str:
    return f"{os.getloadavg()[0]:.1f}"


# --- services ---------------------------------------------------------------------------------------------------
class Services:
    """A private Postgres + pgvector and lakeFS emulator, as the tests start them."""

    def __init__(self, home: Path) -> None:
        from stack import postgres
        from stack.config import StackConfig
        from stack.lakefs_emulator.service import start_emulator
        from stack.process import free_port
        from tasks.common.versioned_data import LakeFSEndpoint

        self.home, self._postgres = home, postgres
        self.cfg = StackConfig(home=home / "stack", postgres_port=free_port(), lakefs_port=0, mlflow_port=0,
                               triton_http_port=0, triton_grpc_port=0, triton_metrics_port=0, airflow_port=0)
        postgres.initialise(self.cfg)
        postgres.start(self.cfg, self.cfg.home / "postgres.log")
        self.lakefs = None
        try:
            postgres.create_databases(self.cfg)
            self.dsn = postgres.dsn(self.cfg, "platform")
            self.lakefs = start_emulator(home / "lakefs" / "data", free_port(), "AKIABENCHRAG", "bench-rag-secret",
                                         run_dir=home / "lakefs" / "run")
            self.endpoint = LakeFSEndpoint(self.lakefs.url, self.lakefs.access_key_id, self.lakefs.secret_access_key)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.lakefs is not None:
            self.lakefs.stop()
        self._postgres.stop(self.cfg)


# --- corpus part ------------------------------------------------------------------------------------------------
class TimedEmbedder:
    """The pipeline's Embedder, with the time of each encode call recorded."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, []

    def encode(self, texts, progress=None):
        began = time.perf_counter()
        out = self.model.encode(texts, progress)
        self.calls.append((len(texts), time.perf_counter() - began))
        return out

    def seconds_for(self, chunks: int) -> float:
        """Time of the first calls that together embedded `chunks` texts (the gate's questions come after)."""
        done, seconds = 0, 0.0
        for count, took in self.calls:
            if done >= chunks:
                break
            done, seconds = done + count, seconds + took
        return seconds


def publish(endpoint, repo: str, records: list[dict], message: str) -> str:
    from tasks.common.versioned_data import Lineage, VersionedRepo

    versioned = VersionedRepo(endpoint, repo)
    versioned.ensure(storage_namespace=f"local://{repo}", protect_default=False)
    versioned.put_object("main", CORPUS_PATH, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode())
    return versioned.commit("main", message, Lineage("bench", "rag", message))


def bare_encode(model, texts: list[str], batch_size: int) -> np.ndarray:
    """One SentenceTransformer.encode call (it sorts the texts by length, so batches carry little padding)."""
    out = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True)
    return out.float().cpu().numpy()


def pipeline_encode(embedder, texts: list[str], batch_size: int) -> np.ndarray:
    """What reindex does: Embedder.encode on committed slices of batch_size * 8 chunks, in corpus order."""
    step = batch_size * 8
    return np.concatenate([embedder.encode(texts[start:start + step]) for start in range(0, len(texts), step)])


def alternate(variants: dict, texts: list[str]) -> dict[str, tuple[np.ndarray, float]]:
    """Each variant encodes every text once: the first half in the given order, the second half in reverse order,
    so drift of the shared machine falls on every variant alike. Returns {name: (vectors, seconds)}."""
    half = len(texts) // 2
    parts: dict[str, list] = {name: [None, None, 0.0] for name in variants}
    for index, (names, chunk) in enumerate(((list(variants), texts[:half]), (list(variants)[::-1], texts[half:]))):
        for name in names:
            began = time.perf_counter()
            parts[name][index] = variants[name](chunk)
            parts[name][2] += time.perf_counter() - began
            log(f"{name}: {len(chunk)} chunks in {time.perf_counter() - began:.1f} s")
    return {name: (np.concatenate([first, second]), seconds) for name, (first, second, seconds) in parts.items()}


def corpus_part(args: argparse.Namespace, services: Services, cfg: rag_config.RagConfig, results: Results
                ) -> np.ndarray:
    """Returns the sample corpus's chunk embeddings (for the vectors part's blends)."""
    import torch

    from tasks.common import platform_db
    from tasks.common.versioned_data import VersionedRepo
    from tasks.curation.sample_corpus import clean_docs
    from tasks.rag import store
    from tasks.rag.chunking import Document
    from tasks.rag.embedding import Embedder
    from tasks.rag.evaluate import load_labelled, score_version
    from tasks.rag.reindex import reindex
    from tasks.rag.steps import chunker_for

    docs = clean_docs(args.docs, args.seed)
    records = [{"id": d.id, "text": d.text, "source": SOURCE} for d in docs]
    repo = VersionedRepo(services.endpoint, "rag-bench")
    v1 = publish(services.endpoint, repo.repo_id, records, "sample corpus")
    log(f"sample corpus: {len(records)} documents at lakefs://rag-bench/{v1[:12]}; loading the model")
    model = TimedEmbedder(Embedder(cfg.embedding.model, cfg.embedding.dimensions, cfg.embedding.batch_size))
    model.model.encode(["warm up the model"])
    # the bench reports the gate's scores rather than stopping at them
    open_gate = replace(cfg, evaluation=replace(cfg.evaluation, gate=replace(
        cfg.evaluation.gate, min_recall_at_k=0.0, min_mrr=0.0)))
    chunker = chunker_for(cfg)
    index = "rag_bench"
    with platform_db.connect(services.dsn) as conn:
        load_full = load_average()
        began = time.perf_counter()
        full = reindex(conn, repo, v1, index, open_gate, chunker, lambda: model, log=log)
        full_wall = time.perf_counter() - began
        pipeline_seconds = model.seconds_for(full.chunks_embedded)
        version = store.live(conn, index)
        stored = np.stack([getattr(v, "to_numpy", lambda v=v: v)() for (v,) in conn.execute(
            f"SELECT embedding FROM {version.table_name} ORDER BY chunk_hash")]).astype(np.float32)

        queries = load_labelled(cfg.evaluation.gate.labelled_queries)
        k = cfg.evaluation.gate.k
        scored = []
        for mode in rag_config.RETRIEVAL_MODES:
            began = time.perf_counter()
            scores = score_version(conn, version, queries, mode, k, cfg.index, lambda q: model.model.encode(q))
            scored.append((mode, scores, (time.perf_counter() - began) / max(scores.counted, 1) * 1000))
            log(f"labelled set, {scores.summary()}; missed: {list(scores.missed)}")

        texts = [chunk.text for chunk in chunker.chunk_all(Document(r["id"], r["text"], SOURCE) for r in records)]
        texts = texts[:args.encode_chunks]
        batch = cfg.embedding.batch_size
        bf16_model = copy.deepcopy(model.model.model).to(torch.bfloat16)  # .to() is in place: copy first
        load_encode = load_average()
        encoded = alternate({
            "pipeline": lambda chunk: pipeline_encode(model.model, chunk, batch),
            "bare fp32": lambda chunk: bare_encode(model.model.model, chunk, batch),
            "bare bf16": lambda chunk: bare_encode(bf16_model, chunk, batch)}, texts)

        changed = max(1, round(len(records) * args.change_share))
        step = len(records) // changed
        edited = [dict(r, text=r["text"] + "\n\nThis entry was revised in the latest release.")
                  if i % step == 0 and i // step < changed else r for i, r in enumerate(records)]
        v2 = publish(services.endpoint, repo.repo_id, edited, f"{changed} documents edited")
        load_incremental = load_average()
        began = time.perf_counter()
        incremental = reindex(conn, repo, v2, index, open_gate, chunker, lambda: model, log=log)
        incremental_wall = time.perf_counter() - began

    n = len(texts)
    pipeline, pipeline_seconds = encoded["pipeline"]
    bare_seconds = encoded["bare fp32"][1]

    def row(name: str, what: str) -> list:
        vectors, seconds = encoded[name]
        cosine = np.sum(vectors * pipeline, axis=1)
        return [what, n, f"{seconds:.1f}", f"{n / seconds:.1f}", f"{bare_seconds / seconds:.0%}",
                f"{cosine.min():.4f} / {cosine.mean():.4f}", load_encode]

    in_reindex = full.chunks_embedded / model.seconds_for(full.chunks_embedded)
    results.table(
        f"Embedding throughput: {n} chunks of the sample corpus, all-MiniLM-L6-v2 on CPU "
        f"({torch.get_num_threads()} torch threads), batch {batch}; each variant encodes every chunk once, half in "
        f"the order listed and half in reverse",
        ["path", "chunks", "seconds", "chunks/s", "vs bare fp32", "cosine to pipeline (min / mean)", "load avg"],
        [row("pipeline", f"pipeline: Embedder.encode on slices of {batch * 8}, as reindex calls it"),
         row("bare fp32", "bare SentenceTransformer.encode, fp32, one call"),
         row("bare bf16", "bare SentenceTransformer.encode, bf16, one call"),
         ["pipeline inside the full reindex below", full.chunks_embedded, "", f"{in_reindex:.1f}",
          f"{in_reindex / (n / bare_seconds):.0%}", "", load_full]])
    results.table(
        f"Reindex of the sample corpus ({len(records)} documents, {full.rows} chunks), model loaded beforehand",
        ["run", "documents changed", "chunks embedded", "chunks deleted", "seconds (in reindex)", "seconds (wall)",
         "share of full", "load avg"],
        [["full (no live version)", len(records), full.chunks_embedded, 0, f"{full.seconds:.1f}", f"{full_wall:.1f}",
          "100%", load_full],
         [f"incremental after {changed} of {len(records)} documents edited ({changed / len(records):.1%})",
          incremental.docs_changed, incremental.chunks_embedded, incremental.chunks_deleted,
          f"{incremental.seconds:.2f}", f"{incremental_wall:.2f}", f"{incremental.seconds / full.seconds:.1%}",
          load_incremental]])
    results.table(
        f"Labelled set ({len(queries)} questions, include/rag/labelled_queries.yaml) on the sample corpus index: "
        f"documents of the top {k} chunks",
        ["mode", "queries counted", f"recall@{k}", "MRR", "missed entirely", "ms per query (incl. embedding)"],
        [[mode, s.counted, "-" if s.recall_at_k is None else f"{s.recall_at_k:.3f}",
          "-" if s.mrr is None else f"{s.mrr:.3f}", len(s.missed), f"{ms:.1f}"] for mode, s, ms in scored])
    results.data["corpus"] = {
        "documents": len(records), "chunks_encoded": n, "in_reindex_chunks_per_s": in_reindex,
        **{f"{name}_chunks_per_s": n / seconds for name, (_, seconds) in encoded.items()},
        "full": full.to_dict(), "incremental": incremental.to_dict(),
        "labelled": {mode: {"counted": s.counted, "recall_at_k": s.recall_at_k, "mrr": s.mrr,
                            "missed": list(s.missed)} for mode, s, _ in scored}}
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(cache_path(args), stored)
    return stored


# --- vectors part -----------------------------------------------------------------------------------------------
def synthetic(kind: str, count: int, base: np.ndarray | None, dims: int, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors: blends of two real embeddings plus noise (mix), or Gaussian directions (random)."""
    out = np.empty((count, dims), dtype=np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        noise = rng.standard_normal((n, dims), dtype=np.float32)
        if kind == "random":
            block = noise
        else:
            weight = rng.uniform(0.2, 0.8, size=(n, 1)).astype(np.float32)
            a, b = base[rng.integers(0, len(base), n)], base[rng.integers(0, len(base), n)]
            block = weight * a + (1 - weight) * b + noise * (0.25 / np.sqrt(dims))
        out[start:start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of each query's k nearest vectors by cosine (unit vectors: dot product), blockwise."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), 100_000):
        scores = queries @ vectors[start:start + 100_000].T
        candidates = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, candidates, 1)], axis=1)
        merged_rows = np.concatenate([best_rows, candidates + start], axis=1)
        keep = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores, best_rows = np.take_along_axis(merged_scores, keep, 1), np.take_along_axis(merged_rows, keep, 1)
    return best_rows


def vectors_part(args: argparse.Namespace, services: Services, cfg: rag_config.RagConfig, base: np.ndarray | None,
                 results: Results) -> None:
    from tasks.common import platform_db
    from tasks.rag import store
    from tasks.rag.chunking import Chunk
    from tasks.rag.retrieve import retrieve

    dims, rng = cfg.embedding.dimensions, np.random.default_rng(args.seed)
    if args.vector_source == "mix" and base is None:
        if not cache_path(args).exists():
            raise SystemExit(f"--vector-source mix needs the sample corpus's embeddings: run --parts corpus once "
                             f"(it caches them in {cache_path(args)}) or use --vector-source random")
        base = np.load(cache_path(args))
    log(f"generating {args.vectors} {args.vector_source} vectors and {args.queries} queries")
    vectors = synthetic(args.vector_source, args.vectors, base, dims, rng)
    queries = synthetic(args.vector_source, args.queries, base, dims, rng)
    truth = exact_top(vectors, queries, 10)
    truth_ids = [{f"v{row}" for row in rows} for rows in truth]
    efs = [int(x) for x in args.ef_search.split(",")]
    rows = []
    with platform_db.connect(services.dsn) as conn:
        for storage in ("vector", "halfvec"):
            index_cfg = replace(cfg.index, storage=storage)
            name = f"rag_bench_{storage}"
            version = store.begin_build(conn, name, "bench", "synthetic", "synthetic", "none", dims, index_cfg)
            load = load_average()
            began = time.perf_counter()
            for start in range(0, args.vectors, 50_000):
                part = range(start, min(start + 50_000, args.vectors))
                with conn.transaction():
                    store.insert_chunks(conn, version, [Chunk(f"v{i}", "bench", f"synthetic vector {i}") for i in part],
                                        vectors[part.start:part.stop])
            insert_seconds = time.perf_counter() - began
            log(f"{storage}: {args.vectors} rows inserted in {insert_seconds:.1f} s; building HNSW + GIN")
            began = time.perf_counter()
            store.build_hnsw(conn, version, args.build_memory or index_cfg.build_memory)
            build_seconds = time.perf_counter() - began
            size = conn.execute("SELECT pg_size_pretty(pg_relation_size(%s))", (f"{version.table_name}_hnsw",)
                                ).fetchone()[0]
            log(f"{storage}: indexes built in {build_seconds:.1f} s (HNSW {size})")
            store.swap(conn, version, args.vectors, 0)
            for ef in efs:
                query_cfg = replace(index_cfg, ef_search=ef)
                for query in queries[: min(50, len(queries))]:  # warm the caches
                    retrieve(conn, name, query, 10, query_cfg)
                latencies, recalls = [], []
                for query, wanted in zip(queries, truth_ids, strict=True):
                    began = time.perf_counter()
                    hits = retrieve(conn, name, query, 10, query_cfg)
                    latencies.append((time.perf_counter() - began) * 1000)
                    recalls.append(len({hit.doc_id for hit in hits} & wanted) / 10)
                cuts = statistics.quantiles(latencies, n=100)
                rows.append([storage, f"{args.vectors:,}", f"{insert_seconds:.1f}",
                             f"{args.vectors / insert_seconds:,.0f}", f"{build_seconds:.1f}", size, ef,
                             f"{statistics.mean(recalls):.3f}", f"{cuts[49]:.2f}", f"{cuts[94]:.2f}", load])
                log(f"{storage} ef_search {ef}: recall@10 {rows[-1][7]}, p50 {rows[-1][8]} ms, p95 {rows[-1][9]} ms")
            with conn.transaction():
                conn.execute(f"DROP VIEW {name}")
                conn.execute(f"DROP TABLE {version.table_name}")
    results.table(
        f"pgvector at {args.vectors:,} x {dims} ({args.vector_source} vectors), HNSW m {cfg.index.m} / ef_construction "
        f"{cfg.index.ef_construction}, maintenance_work_mem {args.build_memory or cfg.index.build_memory}; "
        f"{args.queries} queries, k 10, "
        f"through tasks.rag.retrieve (one transaction each), recall against exact fp32 top 10",
        ["storage", "rows", "insert s (COPY)", "rows/s", "HNSW + GIN build s", "HNSW size", "ef_search", "recall@10",
         "p50 ms", "p95 ms", "load avg"], rows)
    results.data["vectors"] = rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/rag.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="corpus,vectors", help="comma-separated: corpus, vectors (default both)")
    p.add_argument("--docs", type=int, default=1500, help="sample corpus documents (default 1500, the main job's)")
    p.add_argument("--seed", type=int, default=7, help="sample corpus and vector seed (default 7)")
    p.add_argument("--encode-chunks", type=int, default=3000, help="chunks of the sample corpus for the throughput "
                   "comparison (default 3000: all of them at 1500 documents)")
    p.add_argument("--build-memory", help="maintenance_work_mem for the HNSW builds of the vectors part (default: "
                   "rag.yaml's index.build_memory; a 1M-row graph needs about 4GB to build in memory)")
    p.add_argument("--change-share", type=float, default=0.01, help="share of documents edited for the incremental "
                   "reindex (default 0.01)")
    p.add_argument("--vectors", type=int, default=100_000, help="rows of the vectors part (default 100000)")
    p.add_argument("--vector-source", choices=("mix", "random"), default="mix", help="see above (default mix)")
    p.add_argument("--queries", type=int, default=500, help="queries of the vectors part (default 500)")
    p.add_argument("--ef-search", default="40,100,200", help="hnsw.ef_search values to query with (default "
                   "40,100,200; retrieval uses rag.yaml's index.ef_search)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the temporary Postgres and lakeFS directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"corpus", "vectors"}:
        raise SystemExit(f"--parts {args.parts!r}: choose from corpus, vectors")
    os.environ["HF_HUB_OFFLINE"] = "1"
    cfg = rag_config.load()
    results = Results()
    home = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    log(f"services in {home}; load average {load_average()}")
    services = Services(home)
    try:
        base = corpus_part(args, services, cfg, results) if "corpus" in parts else None
        if "vectors" in parts:
            vectors_part(args, services, cfg, base, results)
    finally:
        services.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(f"\n{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("\n\n".join(results.tables))
    if args.json:
        args.json.write_text(json.dumps(results.data, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
