"""The Great Expectations gate: a clean curated set passes; each broken rule fails with a summary that names it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tasks.curation.quality_gate import GateConfig, main, validate_curated
from tasks.curation.records import make_record, to_jsonl

SENTENCE = "Curated text about rivers, mountains and the weather in spring, long enough to pass. "


def clean_records(count: int = 40) -> list[dict]:
    return [
        make_record(f"doc-{i}", f"{SENTENCE}Paragraph {i}. Contact <EMAIL> at <IP_ADDRESS>.", "wiki", {"language": "en"})
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def config() -> GateConfig:
    return GateConfig.from_yaml()


def test_clean_set_passes_with_small_json_details(config: GateConfig) -> None:
    result = validate_curated(clean_records(), config)
    assert result.success, result.summary
    assert result.summary.startswith("quality gate passed on 40 records")
    assert len(json.dumps(result.details)) < 10_000
    assert all(check["success"] for check in result.details["expectations"])


def _with(records: list[dict], position: int, **changes) -> list[dict]:
    changed = copy.deepcopy(records)
    changed[position].update(changes)
    return changed


@pytest.mark.parametrize(
    ("make_bad", "expectation", "words"),
    [
        (
            lambda r: _with(r, 3, id="doc-2"),
            "expect_column_values_to_be_unique(column=id)",
            ["ids are unique", "doc-2"],
        ),
        (
            lambda r: _with(r, 5, text=SENTENCE + "Write to jane.doe@example.org today."),
            "expect_column_values_to_be_in_set(column=residual_pii)",
            ["no residual PII", "doc-5"],
        ),
        (lambda r: _with(r, 7, text="too short"), "expect_column_value_lengths_to_be_between(column=text)", ["doc-7"]),
        (
            lambda r: [{**rec, "meta": {"language": "de"}} if i % 4 == 0 else rec for i, rec in enumerate(r)],
            "expect_column_values_to_be_in_set(column=lang)",
            ["meta.language in ['en']", "10 of 40 rows"],
        ),
        (lambda r: [], "expect_table_row_count_to_be_between", ["observed 0", "at least 1 rows"]),
    ],
    ids=["duplicate-id", "residual-email", "too-short-text", "language-share", "empty-set"],
)
def test_each_broken_rule_is_named(config: GateConfig, make_bad, expectation: str, words: list[str]) -> None:
    result = validate_curated(make_bad(clean_records()), config)
    assert not result.success
    failed = result.summary.splitlines()[1:]
    assert len(failed) == 1, result.summary
    assert failed[0].startswith(f"- {expectation}:")
    for word in words:
        assert word in failed[0]


@pytest.mark.parametrize(
    "pii",
    [
        "card 4111 1111 1111 1111 on file",
        "server at 192.168.10.254 answered",
        "key AKIAIOSFODNN7EXAMPLE leaked",
        "token ghp_" + "a1B2" * 9 + " leaked",
    ],
)
def test_residual_pii_is_caught_without_quoting_it(config: GateConfig, pii: str) -> None:
    result = validate_curated(_with(clean_records(), 1, text=f"{SENTENCE}{pii}"), config)
    assert not result.success
    assert "no residual PII" in result.summary and "doc-1" in result.summary
    assert pii not in result.summary + json.dumps(result.details)


def test_what_the_pii_stage_leaves_alone_passes(config: GateConfig) -> None:
    """A 16-digit number that fails Luhn is not a card to the pii stage, so the gate must not flag it either."""
    result = validate_curated(_with(clean_records(), 1, text=f"{SENTENCE}order 4111 1111 1111 1112 shipped"), config)
    assert result.success, result.summary


def test_missing_column_and_unknown_language_fail(config: GateConfig) -> None:
    records = [{"id": f"doc-{i}", "text": SENTENCE, "meta": {}} for i in range(3)]
    result = validate_curated(records, config)
    assert "expect_column_to_exist(column=source)" in result.summary
    assert "3 of 3 rows break it" in result.summary


def test_languages_override_the_config(config: GateConfig) -> None:
    records = [make_record(f"doc-{i}", SENTENCE, "web", {"language": "fr"}) for i in range(5)]
    assert not validate_curated(records, config).success
    assert validate_curated(records, config, languages=["en", "fr"]).success


def test_config_rejects_typos(tmp_path: Path, config: GateConfig) -> None:
    raw = {**{k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}, "min_row": 1}
    path = tmp_path / "gate.yaml"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"unknown keys \['min_row'\]"):
        GateConfig.from_yaml(path)


def test_cli_exits_1_with_summary_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    curated = tmp_path / "curated.jsonl"
    report = tmp_path / "gate.json"
    curated.write_bytes(to_jsonl(_with(clean_records(), 0, id="doc-1")))
    assert main(["--input", str(curated), "--report", str(report)]) == 1
    assert "ids are unique" in capsys.readouterr().out
    assert json.loads(report.read_text())["success"] is False
    curated.write_bytes(to_jsonl(clean_records()))
    assert main(["--input", str(curated)]) == 0
