"""Shared by the curation stage tests: run a stage over texts and check nothing vanished on the way."""

from __future__ import annotations

from typing import Any

from tasks.curation.records import Record, make_record
from tasks.curation.stage import Stage


def run_stage(stage: Stage[Any], texts: list[str]) -> list[Record]:
    """Records `doc-0`, `doc-1`, ... through the stage; every one is kept or quarantined with a reason."""
    records = [make_record(f"doc-{index}", text, "test") for index, text in enumerate(texts)]
    kept = stage.process(records)
    counters = stage.counters
    assert counters["seen"] == counters["kept"] + counters["dropped"], f"{stage.name} lost records: {counters}"
    assert counters["dropped"] == len(stage.quarantine), f"{stage.name}: a drop without a quarantine entry"
    assert all(entry.stage == stage.name and entry.reason for entry in stage.quarantine)
    return kept


def reasons(stage: Stage[Any]) -> dict[str, str]:
    """{record id: drop reason} of a stage's quarantine."""
    return {entry.id: entry.reason for entry in stage.quarantine}
