from __future__ import annotations

from dataclasses import dataclass

import pytest

from tasks.curation.records import Record, make_record
from tasks.curation.stage import ConfigError, Drop, Stage, build_config


@dataclass(frozen=True)
class _LengthConfig:
    max_len: int = 3
    tags: tuple[str, ...] = ()


class _Length(Stage[_LengthConfig]):
    name = "length"
    config_type = _LengthConfig

    def apply(self, record: Record) -> Record | Drop:
        return Drop("too_long", str(len(record["text"]))) if len(record["text"]) > self.config.max_len else record


def test_every_record_is_kept_or_quarantined_with_its_reason() -> None:
    stage = _Length.from_settings({"max_len": 3})
    kept = stage.process([make_record("a", "abc", "s"), make_record("b", "abcd", "s")])
    assert [r["id"] for r in kept] == ["a"]
    assert stage.counters == {"seen": 2, "kept": 1, "dropped": 1, "dropped:too_long": 1}
    entry = stage.quarantine[0]
    assert (entry.id, entry.source, entry.stage, entry.reason, entry.detail, entry.preview) == \
        ("b", "s", "length", "too_long", "4", "abcd")


def test_config_rejects_unknown_keys_naming_the_section() -> None:
    with pytest.raises(ConfigError, match=r"section 'length': unknown key\(s\) \['max_lenght'\]"):
        _Length.from_settings({"max_lenght": 3})


def test_config_turns_lists_into_tuples() -> None:
    assert build_config(_LengthConfig, {"tags": ["a"]}, "length").tags == ("a",)


class _Fragile(Stage[_LengthConfig]):
    name = "fragile"
    config_type = _LengthConfig

    def apply(self, record: Record) -> Record | Drop:
        return {**record, "text": str(1 // len(record["text"]))}


def test_a_record_the_stage_fails_on_is_quarantined_not_raised() -> None:
    stage = _Fragile.from_settings({})
    kept = stage.process([make_record("a", "x", "s"), make_record("b", "", "s")])
    assert [r["id"] for r in kept] == ["a"]
    assert stage.counters["dropped:error:ZeroDivisionError"] == 1
    assert (stage.quarantine[0].id, stage.quarantine[0].detail) == ("b", "integer division or modulo by zero")
