"""Compose the curation stages and run records through them.

Two lists, because they scale differently: `shard_stages` look at one record at a time and can run on
each shard in its own pod; `global_stages` (exact and fuzzy dedupe) must see every shard. Here, the local
executor, their state lives in one process and the shards are fed through one instance in a fixed order;
`tasks.curation.ray_executor` runs the same stages on Ray with the dedupe state spread by shuffles, using the
same functions (`tasks.curation.dedupe`), so both keep exactly the same records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tasks.curation.records import READ_STAGE, QuarantineEntry, Record, is_supported, read_file
from tasks.curation.stage import ConfigError, Stage
from tasks.curation.stages.blocklist import Blocklist
from tasks.curation.stages.exact_dedupe import ExactDedupe
from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupe
from tasks.curation.stages.language import Language
from tasks.curation.stages.normalise import Normalise
from tasks.curation.stages.pii import Pii
from tasks.curation.stages.quality import Quality

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "include" / "curation" / "curation.yaml"
SHARD_STAGES: tuple[type[Stage[Any]], ...] = (Normalise, Language, Quality, Pii, Blocklist)
GLOBAL_STAGES: tuple[type[Stage[Any]], ...] = (ExactDedupe, FuzzyDedupe)
CurationConfig = Mapping[str, Mapping[str, Any]]


@dataclass
class StageRun:
    kept: list[Record]
    quarantined: list[QuarantineEntry]
    counters_by_stage: dict[str, Counter[str]] = field(default_factory=dict)


def load_config(path: Path | str | None = None) -> dict[str, dict[str, Any]]:
    """curation.yaml as {section: settings}; a section no stage owns is an error (likely a typo)."""
    config_path = Path(path) if path else DEFAULT_CONFIG
    loaded = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{config_path}: expected a mapping of stage sections, got {type(loaded).__name__}")
    known = {stage.name for stage in (*SHARD_STAGES, *GLOBAL_STAGES)}
    unknown = sorted(set(loaded) - known)
    if unknown:
        raise ConfigError(f"{config_path}: unknown section(s) {unknown}; known: {sorted(known)}")
    return {section: dict(settings or {}) for section, settings in loaded.items()}


def _build(stage_types: Iterable[type[Stage[Any]]], config: CurationConfig) -> list[Stage[Any]]:
    return [stage_type.from_settings(config.get(stage_type.name)) for stage_type in stage_types]


def shard_stages(config: CurationConfig) -> list[Stage[Any]]:
    """Per-record stages, safe to run on any shard independently."""
    return _build(SHARD_STAGES, config)


def global_stages(config: CurationConfig) -> list[Stage[Any]]:
    """Dedupe stages; one instance must see all shards, in a fixed order, for "keep the first"."""
    return _build(GLOBAL_STAGES, config)


def run_stages(stages: Iterable[Stage[Any]], records: list[Record]) -> StageRun:
    """Feed the records through the stages in order. Stages keep their state and counters, so calling
    this once per shard with the same global stages dedupes across shards; the returned counters and
    quarantine cover this call only."""
    quarantined: list[QuarantineEntry] = []
    counters_by_stage: dict[str, Counter[str]] = {}
    for stage in stages:
        counters_before, quarantined_before = stage.counters.copy(), len(stage.quarantine)
        records = stage.process(records)
        counters_by_stage[stage.name] = stage.counters - counters_before
        quarantined.extend(stage.quarantine[quarantined_before:])
    return StageRun(records, quarantined, counters_by_stage)


def curate(files: Mapping[str, bytes], config: CurationConfig) -> StageRun:
    """The whole pipeline in one process, shaped like the distributed one: each file is a shard read and
    run through its own shard stages, then every shard's survivors go, in path order, through one set of
    global stages. Reader rejections are quarantined under the stage name "read"."""
    totals: dict[str, Counter[str]] = {READ_STAGE: Counter()}
    quarantined: list[QuarantineEntry] = []
    survivors: list[Record] = []
    for name in sorted(path for path in files if is_supported(path)):
        records, rejected = read_file(name, files[name])
        totals[READ_STAGE].update({"seen": len(records) + len(rejected), "kept": len(records),
                                   "dropped": len(rejected)})
        totals[READ_STAGE].update(f"dropped:{entry.reason}" for entry in rejected)
        quarantined.extend(rejected)
        shard = run_stages(shard_stages(config), records)
        survivors.extend(shard.kept)
        quarantined.extend(shard.quarantined)
        for stage_name, counters in shard.counters_by_stage.items():
            totals.setdefault(stage_name, Counter()).update(counters)
    merged = run_stages(global_stages(config), survivors)
    return StageRun(merged.kept, quarantined + merged.quarantined, {**totals, **merged.counters_by_stage})


def merge_counters(parts: Iterable[Mapping[str, Mapping[str, int]]]) -> dict[str, dict[str, int]]:
    """Stage counters of several shards (or executors' parts) summed, stage by stage."""
    merged: dict[str, dict[str, int]] = {}
    for part in parts:
        for stage, counters in part.items():
            target = merged.setdefault(stage, {})
            for name, value in counters.items():
                target[name] = target.get(name, 0) + int(value)
    return merged
