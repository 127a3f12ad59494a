from __future__ import annotations

from curation_harness import run_stage

from tasks.curation.stages.exact_dedupe import ExactDedupe, ExactDedupeConfig


def test_keeps_the_first_and_names_it_in_later_copies() -> None:
    stage = ExactDedupe(ExactDedupeConfig())
    kept = run_stage(stage, ["Hello  world.", "hello world.", "Hello world!", "HELLO\nWORLD."])
    assert [r["id"] for r in kept] == ["doc-0", "doc-2"]
    assert [(e.id, e.reason, e.detail) for e in stage.quarantine] == [
        ("doc-1", "exact_duplicate", "doc-0"), ("doc-3", "exact_duplicate", "doc-0")]


def test_case_sensitive_keys_keep_case_variants() -> None:
    stage = ExactDedupe(ExactDedupeConfig(case_sensitive=True))
    assert len(run_stage(stage, ["Hello world.", "hello world."])) == 2
