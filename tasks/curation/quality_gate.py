"""The Great Expectations gate on curated records: a curated commit merges to main only when every rule holds.

Rules and thresholds live in include/curation/expectations.yaml; this module turns them into a GX 1.x suite, runs
it on an in-memory DataFrame (ephemeral context: no files, no progress bars) and explains each broken rule by
expectation, column, observed value and a few record ids, never by the offending text, which may hold PII.

CLI: `python -m tasks.curation.quality_gate --input curated.jsonl [--report gate.json]` exits 1 when the gate fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tasks.curation.records import META_LANGUAGE, Record, read_jsonl
from tasks.curation.stages.pii import redact

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationValidationResult
    from great_expectations.expectations import Expectation

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "include" / "curation" / "expectations.yaml"
LANGUAGE_COLUMN = "lang"
RESIDUAL_PII_COLUMN = "residual_pii"  # PII types the pii stage's own detectors still find; "" when clean
UNKNOWN_LANGUAGE = "unknown"


@dataclass(frozen=True)
class GateConfig:
    """The gate's thresholds, validated once when read (see include/curation/expectations.yaml)."""

    required_columns: tuple[str, ...]
    min_rows: int
    min_text_chars: int
    max_text_chars: int
    allowed_languages: tuple[str, ...]
    min_language_share: float
    example_ids: int

    def __post_init__(self) -> None:
        if self.min_rows < 0 or self.example_ids < 0:
            raise ValueError(f"min_rows ({self.min_rows}) and example_ids ({self.example_ids}) must be >= 0")
        if not 0 <= self.min_text_chars <= self.max_text_chars:
            raise ValueError(
                f"need 0 <= min_text_chars ({self.min_text_chars}) <= max_text_chars ({self.max_text_chars})"
            )
        if not 0.0 <= self.min_language_share <= 1.0:
            raise ValueError(f"min_language_share ({self.min_language_share}) must lie in [0, 1]")

    @classmethod
    def from_yaml(cls, path: Path = DEFAULT_CONFIG_PATH) -> GateConfig:
        """Read and validate a gate config; unknown or missing keys are errors, so a typo never loosens the gate."""
        import yaml

        raw = yaml.safe_load(Path(path).read_text()) or {}
        expected = {field.name for field in fields(cls)}
        if set(raw) != expected:
            raise ValueError(
                f"{path}: unknown keys {sorted(set(raw) - expected)}, missing keys {sorted(expected - set(raw))}"
            )
        sequences = {"required_columns", "allowed_languages"}
        return cls(**{key: tuple(value) if key in sequences else value for key, value in raw.items()})


@dataclass(frozen=True)
class GateResult:
    """The verdict: `summary` is for people (logs, the CLI), `details` is small JSON for the lakeFS commit."""

    success: bool
    summary: str
    details: dict[str, Any]


def validate_curated(
    records: Sequence[Mapping[str, Any]], config: GateConfig | None = None, *, languages: Sequence[str] | None = None
) -> GateResult:
    """Run the gate's suite on curated records ({"id", "text", "source", "meta"}) and explain what failed.

    `languages` overrides the config's allowed set, so the gate checks the set the run's language filter kept.
    """
    config = config or GateConfig.from_yaml()
    if languages is not None:
        config = replace(config, allowed_languages=tuple(languages))
    frame = records_frame(records, config)
    expectations = build_expectations(config)
    results = _run_suite(frame, expectations, config)
    order = {expectation.id: position for position, expectation in enumerate(expectations)}
    results = sorted(results, key=lambda result: order.get(result.expectation_config.id, len(order)))
    checks = [_describe(result) for result in results]
    success = all(check["success"] for check in checks)
    return GateResult(
        success, _summary(len(frame), checks, success), {"success": success, "rows": len(frame), "expectations": checks}
    )


def records_frame(records: Sequence[Mapping[str, Any]], config: GateConfig) -> pd.DataFrame:
    """One row per record with `meta.lang` lifted into a column, the shape the suite's rules are written for."""
    import pandas as pd

    if not records:
        # An empty set should fail on the row count alone, not on columns that cannot exist without rows.
        return pd.DataFrame(columns=[*config.required_columns, LANGUAGE_COLUMN, RESIDUAL_PII_COLUMN])
    frame = pd.DataFrame.from_records(records).drop(columns="meta", errors="ignore")
    frame[LANGUAGE_COLUMN] = [_record_language(position, record) for position, record in enumerate(records)]
    frame[RESIDUAL_PII_COLUMN] = [_residual_pii(record.get("text")) for record in records]
    return frame


def _residual_pii(text: Any) -> str:
    """The same detectors that redacted the corpus, so the gate and the pii stage never disagree on what PII is."""
    if not isinstance(text, str):
        return ""
    return ",".join(sorted(kind for kind, count in redact(text)[1].items() if count))


def _record_language(position: int, record: Mapping[str, Any]) -> str:
    meta = record.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise ValueError(
            f"record #{position} (id {record.get('id')!r}): field 'meta' must be an object, got {type(meta).__name__}"
        )
    return meta.get(META_LANGUAGE) or UNKNOWN_LANGUAGE


def build_expectations(config: GateConfig) -> list[Expectation]:
    """The suite, one expectation per rule; `meta.rule` says the rule in words for the summary."""
    import great_expectations.expectations as gxe

    share = config.min_language_share
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=config.min_rows, meta={"rule": f"at least {config.min_rows} rows"}
        ),
        *(gxe.ExpectColumnToExist(column=name, meta={"rule": "column present"}) for name in config.required_columns),
        gxe.ExpectColumnValuesToNotBeNull(column="id", meta={"rule": "every record has an id"}),
        gxe.ExpectColumnValuesToNotBeNull(column="text", meta={"rule": "every record has a text"}),
        gxe.ExpectColumnValuesToBeUnique(column="id", meta={"rule": "ids are unique"}),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text",
            min_value=config.min_text_chars,
            max_value=config.max_text_chars,
            meta={"rule": f"text length in [{config.min_text_chars}, {config.max_text_chars}] chars"},
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=LANGUAGE_COLUMN,
            value_set=list(config.allowed_languages),
            mostly=share,
            meta={"rule": f"at least {share:.0%} of rows have meta.{META_LANGUAGE} in {list(config.allowed_languages)}"},
        ),
    ]
    expectations.append(
        gxe.ExpectColumnValuesToBeInSet(
            column=RESIDUAL_PII_COLUMN, value_set=[""], meta={"rule": "no residual PII (the pii stage's detectors)"}
        )
    )
    return expectations


def _run_suite(
    frame: pd.DataFrame, expectations: list[Expectation], config: GateConfig
) -> list[ExpectationValidationResult]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("curated")
        .add_dataframe_asset("records")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="curated_records", expectations=expectations))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name="curated_gate", data=batch, suite=suite)
    )
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": config.example_ids}
    if "id" in frame.columns:
        result_format["unexpected_index_column_names"] = ["id"]
    return list(validation.run(batch_parameters={"dataframe": frame}, result_format=result_format).results)


def _describe(result: ExpectationValidationResult) -> dict[str, Any]:
    """One small JSON-able record per expectation: what was checked, whether it held, what was seen."""
    config = result.expectation_config
    outcome = result.to_json_dict()
    observed = outcome.get("result") or {}
    check: dict[str, Any] = {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "rule": (config.meta or {}).get("rule", ""),
        "success": bool(result.success),
    }
    error = _exception_message(outcome.get("exception_info") or {})
    if error:
        check["observed"] = {"error": error}
    elif "observed_value" in observed:
        check["observed"] = {"observed_value": observed["observed_value"]}
    elif "unexpected_count" in observed:
        check["observed"] = {
            key: observed.get(key) for key in ("unexpected_count", "element_count", "unexpected_percent")
        }
        ids = [row.get("id") for row in observed.get("partial_unexpected_index_list") or []]
        check["example_ids"] = list(dict.fromkeys(ids))
    else:
        check["observed"] = {}
    return check


def _exception_message(info: Mapping[str, Any]) -> str:
    """GX reports errors either flat or keyed by metric; either way, the first message that was raised."""
    candidates = [info, *(value for value in info.values() if isinstance(value, Mapping))]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            return str(candidate.get("exception_message", "raised an exception")).strip().splitlines()[0]
    return ""


def _summary(rows: int, checks: list[dict[str, Any]], success: bool) -> str:
    failed = [check for check in checks if not check["success"]]
    if success:
        return f"quality gate passed on {rows} records: all {len(checks)} rules hold"
    lines = [f"quality gate FAILED on {rows} records: {len(failed)} of {len(checks)} rules broken"]
    return "\n".join(lines + [_failure_line(check) for check in failed])


def _failure_line(check: dict[str, Any]) -> str:
    target = f"(column={check['column']})" if check["column"] else ""
    observed = check["observed"]
    if "error" in observed:
        seen = f"could not be evaluated: {observed['error']}"
    elif "unexpected_count" in observed:
        seen = (
            f"{observed['unexpected_count']} of {observed['element_count']} rows break it "
            f"({observed['unexpected_percent'] or 0:.3g}%)"
        )
    elif "observed_value" in observed:
        seen = f"observed {observed['observed_value']}"
    else:
        seen = "not satisfied"
    examples = f"; e.g. ids {', '.join(map(str, check['example_ids']))}" if check.get("example_ids") else ""
    return f"- {check['expectation']}{target}: {seen}; rule: {check['rule']}{examples}"


def read_curated(path: Path) -> list[Record]:
    """Curated records from a local JSONL file. Curated output has passed the reader once already, so a line
    that is not a record is an error here rather than a quarantine entry."""
    found, rejected = read_jsonl(path.name, path.read_bytes())
    if rejected:
        raise ValueError(f"{path}: {len(rejected)} lines are not curated records; first: {rejected[0].detail}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.curation.quality_gate",
        description="Validate curated records against the quality gate; exit 1 and print what failed if it fails.",
    )
    parser.add_argument("--input", type=Path, required=True, help="curated records, one JSON object per line")
    parser.add_argument("--report", type=Path, help="write the per-expectation results here as JSON")
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, help=f"gate thresholds (default: {DEFAULT_CONFIG_PATH})"
    )
    parser.add_argument(
        "--languages", help="comma-separated allowed meta.lang values; overrides allowed_languages of --config"
    )
    args = parser.parse_args(argv)
    languages = args.languages.split(",") if args.languages else None
    result = validate_curated(read_curated(args.input), GateConfig.from_yaml(args.config), languages=languages)
    if args.report:
        args.report.write_text(json.dumps(result.details, indent=2) + "\n")
    print(result.summary, flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
