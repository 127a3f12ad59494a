"""Duplicate resolution, written once for both executors (in-process and Ray): content keys, MinHash signatures,
LSH band keys, candidate pairs per band bucket, their confirmation, and duplicate clusters resolved with connected
components so that exactly one member survives.

Every record carries an integer `order`, its position in the input (shard by shard, in path order). The survivor
of a cluster is always its smallest order, so the result depends only on which records are similar, never on the
order in which an executor happens to see them: the local stage builds the buckets in a dict, the Ray executor by a
shuffle on the band key, and both hand the same buckets to the same functions below. With a chain A~B~C where A
and C are not similar, A survives and B and C are dropped naming A (sequential "keep if unlike every earlier
kept record" would keep A and C).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import rensa
from datasketch import MinHash, MinHashLSH

_TOKEN = re.compile(r"\w+")
# A bucket larger than this (many documents sharing one band, e.g. a template repeated with small edits) yields
# pairs of each member with the bucket's first and with its predecessor instead of every pair: linear, not
# quadratic, and still connecting every member whose pair confirms.
MAX_ALL_PAIRS_BUCKET = 64


def content_key(text: str, case_sensitive: bool = False) -> str:
    """Exact-duplicate key: SHA-256 of the text with whitespace collapsed (and case-folded unless asked not to)."""
    canonical = " ".join(text.split())
    return hashlib.sha256((canonical if case_sensitive else canonical.casefold()).encode("utf-8")).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    """Lower-cased word n-grams; a text shorter than one shingle is a single shingle of all its words."""
    words = _TOKEN.findall(text.lower())
    count = max(1, len(words) - size + 1)
    return {" ".join(words[i : i + size]).encode("utf-8") for i in range(count)}


@dataclass(frozen=True)
class MinHasher:
    """MinHash signatures (datasketch, permutations drawn once from the seed) and their LSH band keys.

    The band/row split leans to recall (datasketch's optimum for `false_negative_weight`); candidates are
    confirmed against `threshold` with the signature estimate, so leaning to recall costs comparisons only.
    """

    num_perm: int
    shingle_words: int
    threshold: float
    seed: int
    false_negative_weight: float
    implementation: str = "datasketch"

    def __post_init__(self) -> None:
        template = MinHash(num_perm=self.num_perm, seed=self.seed)
        weights = (1 - self.false_negative_weight, self.false_negative_weight)
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, weights=weights)
        object.__setattr__(self, "_permutations", template.permutations)
        object.__setattr__(self, "_scheme", template.scheme)
        object.__setattr__(self, "bands", lsh.b)
        object.__setattr__(self, "rows", lsh.r)

    def signature(self, text: str) -> np.ndarray:
        if self.implementation == "rensa":
            minhash = rensa.RMinHash(num_perm=self.num_perm, seed=self.seed)
            minhash.update(sorted(shingles(text, self.shingle_words)))
            return np.array(minhash.digest(), dtype=np.uint32)
        minhash = MinHash(num_perm=self.num_perm, seed=self.seed, permutations=self._permutations, scheme=self._scheme)
        minhash.update_batch(sorted(shingles(text, self.shingle_words)))
        return minhash.hashvalues.astype(np.uint32)

    def band_keys(self, signature: np.ndarray) -> list[int]:
        """One signed 64-bit key per band (the band's index is part of it, so equal rows in different bands differ)."""
        keys = []
        for band in range(self.bands):
            rows = signature[band * self.rows : (band + 1) * self.rows].tobytes()
            digest = hashlib.blake2b(band.to_bytes(2, "little") + rows, digest_size=8).digest()
            keys.append(int.from_bytes(digest, "little", signed=True))
        return keys


def estimated_jaccard(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.count_nonzero(first == second)) / len(first)


def bucket_pairs(orders: Iterable[int]) -> list[tuple[int, int]]:
    """Candidate pairs (smaller order first) among the members of one band bucket."""
    members = sorted(set(orders))
    if len(members) <= MAX_ALL_PAIRS_BUCKET:
        return [(a, b) for i, a in enumerate(members) for b in members[i + 1 :]]
    first = members[0]
    return sorted({(first, b) for b in members[1:]} | set(zip(members, members[1:], strict=False)))


def confirmed(
    pairs: Iterable[tuple[int, int]], signatures: Mapping[int, np.ndarray], threshold: float
) -> list[tuple[int, int]]:
    """The candidate pairs whose estimated Jaccard reaches the threshold."""
    return [(a, b) for a, b in sorted(set(pairs)) if estimated_jaccard(signatures[a], signatures[b]) >= threshold]


def survivors(edges: Iterable[tuple[int, int]]) -> dict[int, int]:
    """{member: survivor} for every member of a duplicate cluster that is not its survivor: connected components
    of the confirmed pairs (union-find), each resolved to its smallest order."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges:
        first, second = root(a), root(b)
        if first != second:
            parent[max(first, second)] = min(first, second)
    return {node: root(node) for node in list(parent) if root(node) != node}


def exact_duplicate_of(first_id_by_key: dict[str, str], key: str, record_id: str) -> str | None:
    """Exact dedupe's rule, fed records in input order: the id of the first record with this content key when
    that is another record's (drop, naming it), else None (keep)."""
    kept_id = first_id_by_key.setdefault(key, record_id)
    return kept_id if kept_id != record_id else None


def near_duplicate_detail(survivor_id: str, member: np.ndarray, survivor: np.ndarray) -> str:
    return f"{survivor_id} (estimated Jaccard {estimated_jaccard(member, survivor):.2f})"


def duplicate_id_detail(record_id: str) -> str:
    return f"id '{record_id}' was already kept with a different text"


def drop_counters(seen: int, drops: Sequence[str]) -> dict[str, int]:
    """A stage's counters from its verdicts, in the shape `Stage.settle` leaves them (zero counts left out)."""
    counters = {"seen": seen, "kept": seen - len(drops), "dropped": len(drops)}
    for reason in drops:
        counters[f"dropped:{reason}"] = counters.get(f"dropped:{reason}", 0) + 1
    return {name: value for name, value in counters.items() if value}
