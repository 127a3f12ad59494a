"""Drop near duplicates with MinHash + LSH (datasketch): a record whose estimated Jaccard similarity of
word shingles with an earlier kept record reaches `threshold` is dropped, naming that record.

LSH only proposes candidates; each is confirmed with the MinHash Jaccard estimate so the threshold is a
real bound rather than the banding's S-curve. That confirmation is what lets the banding lean hard towards
recall (`false_negative_weight`): extra candidates cost a comparison, never a wrong drop. State lives in this process: one instance must see every
shard (see `tasks.curation.pipeline.global_stages`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

from tasks.curation.records import Record
from tasks.curation.stage import ConfigError, Drop, Stage

_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class FuzzyDedupeConfig:
    num_perm: int = 128
    shingle_words: int = 3
    threshold: float = 0.8
    seed: int = 1
    false_negative_weight: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 < self.false_negative_weight < 1:
            raise ConfigError(f"false_negative_weight must be in (0, 1), got {self.false_negative_weight}")
        if self.shingle_words < 1 or self.num_perm < 16:
            raise ConfigError(f"need shingle_words >= 1 and num_perm >= 16, got {self.shingle_words}, {self.num_perm}")


def shingles(text: str, size: int) -> set[bytes]:
    """Lower-cased word n-grams; a text shorter than one shingle is a single shingle of all its words."""
    words = _TOKEN.findall(text.lower())
    count = max(1, len(words) - size + 1)
    return {" ".join(words[i:i + size]).encode("utf-8") for i in range(count)}


class FuzzyDedupe(Stage[FuzzyDedupeConfig]):
    name = "fuzzy_dedupe"
    config_type = FuzzyDedupeConfig

    def __init__(self, config: FuzzyDedupeConfig) -> None:
        super().__init__(config)
        weights = (1 - config.false_negative_weight, config.false_negative_weight)
        self.lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm, weights=weights)
        self.signatures: dict[str, MinHash] = {}
        # datasketch draws the permutations anew for every MinHash; draw them once (same seed, same values).
        template = MinHash(num_perm=config.num_perm, seed=config.seed)
        self.permutations, self.scheme = template.permutations, template.scheme

    def signature(self, text: str) -> MinHash:
        minhash = MinHash(num_perm=self.config.num_perm, seed=self.config.seed, permutations=self.permutations,
                          scheme=self.scheme)
        minhash.update_batch(sorted(shingles(text, self.config.shingle_words)))
        return minhash

    def apply(self, record: Record) -> Record | Drop:
        minhash = self.signature(record["text"])
        best_id, best_score = "", 0.0
        for candidate in self.lsh.query(minhash):
            score = minhash.jaccard(self.signatures[candidate])
            if score > best_score or (score == best_score and candidate < best_id):
                best_id, best_score = candidate, score
        if best_id and best_score >= self.config.threshold:
            return Drop("near_duplicate", f"{best_id} (estimated Jaccard {best_score:.2f})")
        if record["id"] in self.signatures:
            return Drop("duplicate_id", f"id '{record['id']}' was already kept with a different text")
        self.lsh.insert(record["id"], minhash)
        self.signatures[record["id"]] = minhash
        return record
