"""The dedupe logic both executors share: candidate pairs, connected components, the survivor rule."""

from __future__ import annotations

import random

from tasks.curation import dedupe
from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupeConfig


def test_a_chain_is_one_cluster_whose_first_member_survives_whatever_the_edge_order() -> None:
    edges = [(1, 2), (2, 3), (7, 9), (3, 5)]
    for seed in range(5):
        shuffled = [tuple(reversed(e)) if random.Random(seed).random() < 0.5 else e for e in edges]
        random.Random(seed).shuffle(shuffled)
        assert dedupe.survivors(shuffled) == {2: 1, 3: 1, 5: 1, 9: 7}


def test_buckets_pair_every_member_and_large_ones_stay_linear() -> None:
    assert dedupe.bucket_pairs([5, 1, 3, 1]) == [(1, 3), (1, 5), (3, 5)]
    members = list(range(dedupe.MAX_ALL_PAIRS_BUCKET + 36))
    pairs = dedupe.bucket_pairs(reversed(members))
    assert len(pairs) < 2 * len(members)
    assert dedupe.survivors(pairs) == {member: 0 for member in members[1:]}


def test_confirmation_keeps_only_pairs_at_the_threshold() -> None:
    signatures = {
        1: dedupe.np.array([1, 2, 3, 4], dtype="uint32"),
        2: dedupe.np.array([1, 2, 3, 9], dtype="uint32"),
        3: dedupe.np.array([1, 8, 8, 9], dtype="uint32"),
    }
    assert dedupe.confirmed([(1, 2), (2, 3), (1, 3), (1, 2)], signatures, 0.75) == [(1, 2)]


def test_exact_rule_names_the_first_record_and_keeps_a_repeat_of_the_same_id() -> None:
    first: dict[str, str] = {}
    verdicts = [
        dedupe.exact_duplicate_of(first, key, record_id)
        for key, record_id in [("k", "a"), ("k", "b"), ("k", "a"), ("j", "c")]
    ]
    assert verdicts == [None, "a", None, None]


def test_signatures_and_band_keys_are_deterministic_and_lean_to_recall() -> None:
    hasher = FuzzyDedupeConfig().hasher()
    text = "the quick brown fox jumps over the lazy dog again and again"
    assert (hasher.signature(text) == FuzzyDedupeConfig().hasher().signature(text)).all()
    assert len(hasher.band_keys(hasher.signature(text))) == hasher.bands
    assert hasher.bands * hasher.rows <= 128 and (hasher.bands, hasher.rows) == (14, 9)
    assert dedupe.drop_counters(5, ["near_duplicate", "near_duplicate"]) == {
        "seen": 5,
        "kept": 3,
        "dropped": 2,
        "dropped:near_duplicate": 2,
    }
    assert dedupe.drop_counters(0, []) == {}
