"""Drop exact duplicates: the first record with a given normalised text wins, later ones point at it.

The key (`tasks.curation.dedupe.content_key`) is a SHA-256 of the text case-folded with whitespace collapsed, so
copies differing only in case or spacing count as the same document. This is the in-process executor: one
instance sees every shard in input order, so the first seen is the smallest order, the survivor the Ray executor
picks after its shuffle on the same key.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.curation.dedupe import content_key, exact_duplicate_of
from tasks.curation.records import Record
from tasks.curation.stage import Drop, Stage


@dataclass(frozen=True)
class ExactDedupeConfig:
    case_sensitive: bool = False


class ExactDedupe(Stage[ExactDedupeConfig]):
    name = "exact_dedupe"
    config_type = ExactDedupeConfig

    def __init__(self, config: ExactDedupeConfig) -> None:
        super().__init__(config)
        self.first_id_by_key: dict[str, str] = {}

    def apply(self, record: Record) -> Record | Drop:
        key = content_key(record["text"], self.config.case_sensitive)
        kept_id = exact_duplicate_of(self.first_id_by_key, key, record["id"])
        return record if kept_id is None else Drop("exact_duplicate", kept_id)
