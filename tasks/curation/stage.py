"""The one interface every curation stage implements, so the DAG, the benchmark and the tests compose the
same stage list and nothing leaves a stage without a recorded reason.

A stage owns a small frozen config dataclass (built from its section of include/curation/curation.yaml),
decides per record whether to keep it (possibly modified) or `Drop` it, and the base class does the
bookkeeping: `seen == kept + dropped` holds by construction and every drop lands in `quarantine`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from tasks.curation.records import PREVIEW_CHARS, QuarantineEntry, Record, quarantine

ConfigT = TypeVar("ConfigT")


class ConfigError(ValueError):
    """A curation.yaml section names an unknown key or holds a value outside its rule."""


@dataclasses.dataclass(frozen=True)
class Drop:
    """A stage's verdict to remove a record: `reason` is a stable rule name, `detail` the evidence."""

    reason: str
    detail: str = ""


def build_config(config_type: type[ConfigT], settings: Mapping[str, Any] | None, section: str) -> ConfigT:
    """A config dataclass from one YAML section; unknown keys are errors (a typo must not silently
    fall back to a default), lists become tuples so the config stays hashable and frozen."""
    settings = dict(settings or {})
    known = {field.name for field in dataclasses.fields(config_type)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"curation config section '{section}': unknown key(s) {unknown}; known: {sorted(known)}")
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in settings.items()}
    try:
        return config_type(**values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"curation config section '{section}': {error}") from error


class Stage(ABC, Generic[ConfigT]):
    """Base of every stage: subclasses set `name` and `config_type` and implement `apply`."""

    name: ClassVar[str]
    config_type: ClassVar[type]

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self.quarantine: list[QuarantineEntry] = []

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> Self:
        return cls(build_config(cls.config_type, settings, cls.name))

    def process(self, batch: list[Record]) -> list[Record]:
        """Kept records in input order; dropped ones are counted by reason and quarantined. A record the
        stage fails on is quarantined as `error:<exception>`: one odd record must not fail its shard."""
        return self.settle(batch, [self._outcome(record) for record in batch])

    def settle(self, batch: list[Record], outcomes: list[Record | Drop]) -> list[Record]:
        """The bookkeeping for one verdict per record: counters, quarantine, and the kept records in order.
        Stages that decide over a whole batch (dedupe) override `process` and still settle here."""
        kept: list[Record] = []
        for record, outcome in zip(batch, outcomes, strict=True):
            self.counters["seen"] += 1
            if isinstance(outcome, Drop):
                self.counters["dropped"] += 1
                self.counters[f"dropped:{outcome.reason}"] += 1
                self.quarantine.append(quarantine(record, self.name, outcome.reason, outcome.detail))
            else:
                self.counters["kept"] += 1
                kept.append(outcome)
        return kept

    def _outcome(self, record: Record) -> Record | Drop:
        try:
            return self.apply(record)
        except Exception as error:  # noqa: BLE001 - any failure is this record's, recorded with its reason
            return Drop(f"error:{type(error).__name__}", str(error)[:PREVIEW_CHARS])

    @abstractmethod
    def apply(self, record: Record) -> Record | Drop:
        """Keep (return the record, possibly a modified copy) or drop (return a `Drop`)."""
