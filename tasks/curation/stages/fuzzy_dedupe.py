"""Drop near duplicates with MinHash + LSH: records whose estimated Jaccard similarity of word shingles reaches
`threshold` are linked, linked records form clusters (connected components), and only the first record of each
cluster (in input order) is kept; the others are dropped naming it.

The logic lives in `tasks.curation.dedupe`, shared with the Ray executor, which builds the same buckets by a
shuffle instead of a dict; this stage is the in-process executor of it. Calling `process` once with every
shard's records gives exactly the Ray result. Called again, a later batch is resolved against the records kept
so far (earlier verdicts are final, so a later record that bridges two kept records cannot undo either).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tasks.curation import dedupe
from tasks.curation.records import Record
from tasks.curation.stage import ConfigError, Drop, Stage

MINHASH_IMPLEMENTATIONS = ("datasketch", "rensa")


@dataclass(frozen=True)
class FuzzyDedupeConfig:
    num_perm: int = 128
    shingle_words: int = 3
    threshold: float = 0.8
    seed: int = 1
    false_negative_weight: float = 0.9
    minhash: str = "datasketch"

    def __post_init__(self) -> None:
        if self.minhash not in MINHASH_IMPLEMENTATIONS:
            raise ConfigError(f"minhash must be one of {MINHASH_IMPLEMENTATIONS}, got {self.minhash!r}")
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 < self.false_negative_weight < 1:
            raise ConfigError(f"false_negative_weight must be in (0, 1), got {self.false_negative_weight}")
        if self.shingle_words < 1 or self.num_perm < 16:
            raise ConfigError(f"need shingle_words >= 1 and num_perm >= 16, got {self.shingle_words}, {self.num_perm}")

    def hasher(self) -> dedupe.MinHasher:
        return dedupe.MinHasher(self.num_perm, self.shingle_words, self.threshold, self.seed,
                                self.false_negative_weight, self.minhash)


class FuzzyDedupe(Stage[FuzzyDedupeConfig]):
    name = "fuzzy_dedupe"
    config_type = FuzzyDedupeConfig

    def __init__(self, config: FuzzyDedupeConfig) -> None:
        super().__init__(config)
        self.hasher = config.hasher()
        self.next_order = 0
        # what earlier batches kept: order -> (id, signature), and band key -> orders
        self.kept: dict[int, tuple[str, np.ndarray]] = {}
        self.buckets: dict[int, list[int]] = defaultdict(list)
        self.kept_ids: set[str] = set()

    def process(self, batch: list[Record]) -> list[Record]:
        orders = range(self.next_order, self.next_order + len(batch))
        self.next_order += len(batch)
        signatures = {order: self.hasher.signature(record["text"]) for order, record in zip(orders, batch, strict=True)}
        band_keys = {order: self.hasher.band_keys(signature) for order, signature in signatures.items()}
        new_buckets: dict[int, list[int]] = defaultdict(list)
        for order, keys in band_keys.items():
            for key in keys:
                new_buckets[key].append(order)
        pairs = [pair for key, members in new_buckets.items()
                 for pair in dedupe.bucket_pairs(self.buckets.get(key, []) + members)]
        known = {**{order: signature for order, (_, signature) in self.kept.items()}, **signatures}
        survivor_of = dedupe.survivors(dedupe.confirmed(pairs, known, self.config.threshold))
        ids = {order: record["id"] for order, record in zip(orders, batch, strict=True)}
        outcomes: list[Record | Drop] = []
        for order, record in zip(orders, batch, strict=True):
            survivor = survivor_of.get(order)
            if survivor is not None:
                survivor_id = self.kept[survivor][0] if survivor in self.kept else ids[survivor]
                outcomes.append(Drop("near_duplicate", dedupe.near_duplicate_detail(
                    survivor_id, signatures[order], known[survivor])))
            elif record["id"] in self.kept_ids:
                outcomes.append(Drop("duplicate_id", dedupe.duplicate_id_detail(record["id"])))
            else:
                outcomes.append(record)
                self.kept_ids.add(record["id"])
                self.kept[order] = (record["id"], signatures[order])
                for key in band_keys[order]:
                    self.buckets[key].append(order)
        return self.settle(batch, outcomes)

    def apply(self, record: Record) -> Record | Drop:
        raise TypeError(f"{self.name} decides over a whole batch: call process(), not apply()")
