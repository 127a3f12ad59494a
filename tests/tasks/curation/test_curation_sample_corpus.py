"""End to end over the default sample corpus: every planted dirty record meets the fate its manifest
entry names, and most clean stdlib documents survive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tasks.curation.pipeline import StageRun, curate, load_config
from tasks.curation.records import QuarantineEntry, Record
from tasks.curation.sample_corpus import BOILERPLATE_MARKERS, DEFAULT_DOCS, MANIFEST, build_sample_corpus, main


@pytest.fixture(scope="module")
def corpus() -> dict[str, bytes]:
    return build_sample_corpus(docs=DEFAULT_DOCS, seed=7)


@pytest.fixture(scope="module")
def manifest(corpus: dict[str, bytes]) -> dict[str, Any]:
    return json.loads(corpus[MANIFEST])


@pytest.fixture(scope="module")
def run(corpus: dict[str, bytes]) -> StageRun:
    return curate(corpus, load_config())


def _check(record_id: str, expected: dict[str, Any], dropped: dict[str, QuarantineEntry],
           kept: dict[str, Record]) -> str | None:
    """What went wrong for one manifest entry, or None."""
    if expected["expect"] == "drop":
        entry = dropped.get(record_id)
        if entry is None:
            return f"{record_id}: expected {expected['stage']}/{expected['reason']}, but it was kept"
        if (entry.stage, entry.reason) != (expected["stage"], expected["reason"]) or \
                not entry.detail.startswith(expected.get("detail_startswith", "")):
            return f"{record_id}: expected {expected}, got {entry.stage}/{entry.reason} ({entry.detail})"
        return None
    record = kept.get(record_id)
    if record is None:
        entry = dropped.get(record_id)
        return f"{record_id}: expected kept, dropped by {entry and (entry.stage, entry.reason, entry.detail)}"
    problems = []
    if record["meta"].get("pii", {}) != expected["redact"]:
        problems.append(f"redactions {record['meta'].get('pii', {})} != {expected['redact']}")
    problems += [f"lost {s!r}" for s in expected["must_keep"] if s not in record["text"]]
    problems += [f"still holds {s!r}" for s in expected["must_not_contain"] if s in record["text"]]
    return f"{record_id}: {'; '.join(problems)}" if problems else None


def test_every_planted_record_meets_its_expected_fate(run: StageRun, manifest: dict[str, Any]) -> None:
    dropped = {entry.id: entry for entry in run.quarantined}
    kept = {record["id"]: record for record in run.kept}
    failures = [problem for record_id, expected in sorted(manifest["records"].items())
                if (problem := _check(record_id, expected, dropped, kept))]
    assert not failures, "\n".join(failures)
    assert len(manifest["records"]) >= 30


def test_clean_documents_mostly_survive_without_boilerplate(run: StageRun, manifest: dict[str, Any]) -> None:
    clean_kept = [r for r in run.kept if r["id"] not in manifest["records"]]
    assert len(clean_kept) >= 0.8 * manifest["clean_docs"], run.counters_by_stage
    pages = [r for r in clean_kept if r["id"].startswith("pages/")]
    assert pages and not any(marker in r["text"] for r in pages for marker in BOILERPLATE_MARKERS)


def test_nothing_vanishes(run: StageRun, corpus: dict[str, bytes]) -> None:
    for stage, counters in run.counters_by_stage.items():
        assert counters["seen"] == counters["kept"] + counters["dropped"], stage
    assert run.counters_by_stage["read"]["seen"] == len(run.kept) + len(run.quarantined)


def test_the_corpus_is_deterministic_and_has_every_format(corpus: dict[str, bytes]) -> None:
    assert build_sample_corpus(docs=DEFAULT_DOCS, seed=7) == corpus
    suffixes = {Path(path).suffix for path in corpus}
    assert {".jsonl", ".txt", ".md", ".html", ".json"} <= suffixes


def test_cli_writes_the_corpus_and_has_help(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--docs", "100", "--seed", "3"]) == 0
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(build_sample_corpus(docs=100, seed=3))
    assert json.loads((tmp_path / MANIFEST).read_text())["clean_docs"] == 100
    usage = subprocess.run([sys.executable, "-m", "tasks.curation.sample_corpus", "--help"],
                           capture_output=True, text=True, check=True).stdout
    assert "--docs" in usage and "manifest.json" in usage
