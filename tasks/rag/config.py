"""include/rag/rag.yaml read once into small frozen configs, one per concern; a run's overrides applied here."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "rag" / "rag.yaml"
INDEX_NAME = re.compile(r"^[a-z][a-z0-9_]{2,40}$")
Storage = Literal["vector", "halfvec"]


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

    def __post_init__(self) -> None:
        if self.storage not in ("vector", "halfvec"):
            raise ValueError(f"index.storage {self.storage!r} must be 'vector' or 'halfvec'")
        if not (2 <= self.m <= 100 and self.ef_construction >= 2 * self.m and self.ef_search >= 1):
            raise ValueError(f"index: m={self.m} must be in 2..100 (pgvector's range), ef_construction="
                             f"{self.ef_construction} >= 2*m, ef_search={self.ef_search} >= 1")

    @property
    def hnsw(self) -> dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction}


@dataclass(frozen=True)
class EvaluationConfig:
    probes: int
    k: int
    min_recall: float


@dataclass(frozen=True)
class RagConfig:
    corpus_path: str
    chunker: ChunkerConfig
    embedding: EmbeddingConfig
    index: IndexConfig
    evaluation: EvaluationConfig


def load(chunker: str | None = None, batch_size: int | None = None, storage: str | None = None,
         config_path: Path = DEFAULT_CONFIG) -> RagConfig:
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
        evaluation=EvaluationConfig(**raw["evaluation"]),
    )


def require_index_name(name: str) -> str:
    """Index names become table and view names, so only a safe identifier is accepted."""
    if not INDEX_NAME.match(name):
        raise ValueError(f"index name {name!r} must match {INDEX_NAME.pattern} (it names SQL tables)")
    return name
