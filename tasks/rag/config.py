"""include/rag/rag.yaml read once into small frozen configs, one per concern; a run's overrides applied here."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "rag" / "rag.yaml"
INDEX_NAME = re.compile(r"^[a-z][a-z0-9_]{2,40}$")
MEMORY = re.compile(r"^[1-9][0-9]*(kB|MB|GB)$")
Storage = Literal["vector", "halfvec"]
RetrievalMode = Literal["vector", "fulltext", "hybrid"]
RETRIEVAL_MODES: tuple[str, ...] = ("vector", "fulltext", "hybrid")


@dataclass(frozen=True)
class ChunkerConfig:
    name: str
    kind: Literal["token_window", "sections"]
    size: int = 128
    overlap: int = 32
    max_tokens: int = 200

    def __post_init__(self) -> None:
        if self.kind not in ("token_window", "sections"):
            raise ValueError(f"chunker {self.name!r}: kind {self.kind!r} is not token_window or sections")
        if self.kind == "token_window" and not 0 <= self.overlap < self.size:
            raise ValueError(f"chunker {self.name!r}: overlap {self.overlap} must be >= 0 and < size {self.size}")
        if self.kind == "sections" and self.max_tokens < 16:
            raise ValueError(f"chunker {self.name!r}: max_tokens {self.max_tokens} must be >= 16")

    @property
    def fingerprint(self) -> str:
        """What the freshness table records: another fingerprint means other chunks, so a full rebuild."""
        if self.kind == "token_window":
            return f"token_window(size={self.size},overlap={self.overlap})"
        return f"sections(max_tokens={self.max_tokens})"


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str
    dimensions: int
    batch_size: int


@dataclass(frozen=True)
class IndexConfig:
    storage: Storage
    m: int
    ef_construction: int
    ef_search: int
    max_scan_tuples: int
    keep_retired: int
    hybrid_candidates: int = 40  # rows each search hands to reciprocal rank fusion (at least k)
    rrf_k: int = 60  # RRF: a row scores sum(1 / (rrf_k + rank)) over the searches that found it
    build_memory: str = "1GB"  # maintenance_work_mem of the HNSW build: a graph that fits builds several times faster

    def __post_init__(self) -> None:
        if self.storage not in ("vector", "halfvec"):
            raise ValueError(f"index.storage {self.storage!r} must be 'vector' or 'halfvec'")
        if not (2 <= self.m <= 100 and self.ef_construction >= 2 * self.m and self.ef_search >= 1):
            raise ValueError(f"index: m={self.m} must be in 2..100 (pgvector's range), ef_construction="
                             f"{self.ef_construction} >= 2*m, ef_search={self.ef_search} >= 1")
        if not MEMORY.match(self.build_memory):
            raise ValueError(f"index.build_memory {self.build_memory!r} must be a size like 512MB or 1GB")
        if self.hybrid_candidates < 1 or self.rrf_k < 0:
            raise ValueError(f"index: hybrid_candidates={self.hybrid_candidates} must be >= 1 and rrf_k="
                             f"{self.rrf_k} >= 0")

    @property
    def hnsw(self) -> dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction}


def require_mode(mode: str, where: str) -> str:
    if mode not in RETRIEVAL_MODES:
        raise ValueError(f"{where} {mode!r} must be one of {', '.join(RETRIEVAL_MODES)}")
    return mode


@dataclass(frozen=True)
class GateConfig:
    """The retrieval gate: recall@k and MRR of the labelled query set, searched `mode`'s way, before a swap."""

    labelled_queries: Path
    mode: RetrievalMode
    k: int
    min_recall_at_k: float
    min_mrr: float

    def __post_init__(self) -> None:
        require_mode(self.mode, "evaluation.gate.mode")
        if self.k < 1:
            raise ValueError(f"evaluation.gate.k {self.k} must be >= 1")
        for name in ("min_recall_at_k", "min_mrr"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"evaluation.gate.{name} {getattr(self, name)} must be in 0..1")


@dataclass(frozen=True)
class EvaluationConfig:
    probes: int
    k: int
    min_recall: float
    gate: GateConfig


@dataclass(frozen=True)
class RagConfig:
    corpus_path: str
    chunker: ChunkerConfig
    embedding: EmbeddingConfig
    index: IndexConfig
    evaluation: EvaluationConfig


def load(chunker: str | None = None, batch_size: int | None = None, storage: str | None = None,
         config_path: Path = DEFAULT_CONFIG, gate_mode: str | None = None) -> RagConfig:
    """The configuration with a run's overrides (None = the file's value); bad values fail here, named."""
    raw: dict[str, Any] = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    chunker_name = chunker or raw["default_chunker"]
    if chunker_name not in raw["chunkers"]:
        raise ValueError(f"chunker {chunker_name!r} is not configured in {config_path.name}; "
                         f"choose one of {', '.join(sorted(raw['chunkers']))}")
    embedding = EmbeddingConfig(**raw["embedding"])
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be >= 1")
        embedding = replace(embedding, batch_size=batch_size)
    index = IndexConfig(**raw["index"])
    if storage is not None:
        index = replace(index, storage=storage)
    return RagConfig(
        corpus_path=raw["corpus"]["path"],
        chunker=ChunkerConfig(name=chunker_name, **raw["chunkers"][chunker_name]),
        embedding=embedding,
        index=index,
        evaluation=_evaluation(raw["evaluation"], config_path.parent, gate_mode),
    )


def _evaluation(raw: dict[str, Any], base: Path, gate_mode: str | None) -> EvaluationConfig:
    """The gate's labelled set is named relative to the config file; a run may search it another way."""
    gate = dict(raw["gate"])
    gate["labelled_queries"] = base / gate["labelled_queries"]
    gate["mode"] = gate_mode or gate["mode"]
    return EvaluationConfig(**{**raw, "gate": GateConfig(**gate)})


def require_index_name(name: str) -> str:
    """Index names become table and view names, so only a safe identifier is accepted."""
    if not INDEX_NAME.match(name):
        raise ValueError(f"index name {name!r} must match {INDEX_NAME.pattern} (it names SQL tables)")
    return name
