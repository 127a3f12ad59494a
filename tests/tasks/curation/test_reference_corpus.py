"""The shipped stages keep clean text they were not tuned on: the reference corpus of package READMEs and
changelogs (`bench/reference_corpus.py`), where every drop is a false drop (`bench/curation_false_drops.py`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tasks.curation.pipeline import load_config, run_stages, shard_stages
from tasks.curation.records import Record, read_jsonl

CORPUS = Path(__file__).parent / "data" / "reference_corpus.jsonl"
MAX_FALSE_DROP_RATE = 0.01  # measured 0.67 % (docs/benchmarks.md); a rule change that loses more fails here


@pytest.fixture(scope="module")
def records() -> list[Record]:
    found, unreadable = read_jsonl(CORPUS.name, CORPUS.read_bytes())
    assert not unreadable
    return found


def test_the_corpus_has_every_kind_and_both_shapes(records: list[Record]) -> None:
    kinds = Counter((r["meta"]["kind"], r["meta"]["lines"]) for r in records)
    assert set(kinds) == {("paragraph", "single"), ("section", "multi"), ("changelog", "multi")}
    assert min(kinds.values()) >= 100 and len(records) >= 1500


def test_false_drops_stay_under_the_bound(records: list[Record]) -> None:
    dropped = run_stages(shard_stages(load_config()), records).quarantined
    by_rule = Counter(entry.reason for entry in dropped)
    assert len(dropped) <= MAX_FALSE_DROP_RATE * len(records), by_rule
    single_line = {r["id"] for r in records if r["meta"]["lines"] == "single"}
    assert not [e.id for e in dropped if e.id in single_line and e.reason == "quality:bullet_lines"]
