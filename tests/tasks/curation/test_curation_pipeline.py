from __future__ import annotations

from pathlib import Path

import pytest

from tasks.curation.pipeline import curate, global_stages, load_config, run_stages, shard_stages
from tasks.curation.records import make_record
from tasks.curation.stage import ConfigError

PROSE = ("The reading room of the city library is open to every visitor from Monday to Friday. Books that "
         "are due while the building is closed can be returned later without any fee, and the staff will "
         "help with questions about the new catalogue that replaced the old card index this spring.")


def test_the_shipped_config_builds_every_stage_in_order() -> None:
    config = load_config()
    assert [s.name for s in shard_stages(config)] == ["normalise", "language", "quality", "pii", "blocklist"]
    assert [s.name for s in global_stages(config)] == ["exact_dedupe", "fuzzy_dedupe"]


def test_unknown_sections_and_keys_are_rejected(tmp_path: Path) -> None:
    bad_section = tmp_path / "a.yaml"
    bad_section.write_text("qualiti: {min_words: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['qualiti'\]"):
        load_config(bad_section)
    bad_key = tmp_path / "b.yaml"
    bad_key.write_text("quality: {min_word: 3}\n")
    with pytest.raises(ConfigError, match=r"section 'quality': unknown key\(s\) \['min_word'\]"):
        shard_stages(load_config(bad_key))


def test_global_stages_dedupe_across_shards_and_counters_cover_each_call() -> None:
    dedupe = global_stages(load_config())
    first = run_stages(dedupe, [make_record("a", PROSE, "shard-1")])
    second = run_stages(dedupe, [make_record("b", PROSE, "shard-2"), make_record("c", PROSE.upper(), "shard-2")])
    assert [r["id"] for r in first.kept] == ["a"] and second.kept == []
    assert [(e.id, e.reason, e.detail) for e in second.quarantined] == [
        ("b", "exact_duplicate", "a"), ("c", "exact_duplicate", "a")]
    assert second.counters_by_stage["exact_dedupe"] == {"seen": 2, "dropped": 2, "dropped:exact_duplicate": 2}


def test_curate_reads_shards_and_accounts_for_every_input() -> None:
    files = {
        "a.jsonl": f'{{"id": "j1", "text": "{PROSE}"}}\n{{"id": "broken"\n'.encode(),
        "b.txt": PROSE.encode(),
        "c.html": (b"<html><nav>Home</nav><p>The museum on the hill opens a new exhibition about the history of "
                   b"the harbour next week, with maps, photographs and letters that the families of the old "
                   b"sailors gave to the town. Write to info@museum.example for a guided tour.</p></html>"),
    }
    run = curate(files, load_config())
    assert [r["id"] for r in run.kept] == ["j1", "c.html"]
    assert run.kept[1]["meta"]["pii"] == {"EMAIL": 1} and "Home" not in run.kept[1]["text"]
    assert sorted((e.id, e.stage, e.reason) for e in run.quarantined) == [
        ("a.jsonl:2", "read", "malformed_json"), ("b.txt", "exact_dedupe", "exact_duplicate")]
    for stage, counters in run.counters_by_stage.items():
        assert counters["seen"] == counters["kept"] + counters["dropped"], stage
