"""Drop exact duplicates: the first record with a given normalised text wins, later ones point at it.

The key is a SHA-256 of the text case-folded with whitespace collapsed, so copies differing only in
case or spacing count as the same document. State lives in this process: one instance must see every
shard (see `tasks.curation.pipeline.global_stages` for what running it across pods would need).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tasks.curation.records import Record
from tasks.curation.stage import Drop, Stage


@dataclass(frozen=True)
class ExactDedupeConfig:
    case_sensitive: bool = False


def content_key(text: str, case_sensitive: bool = False) -> str:
    canonical = " ".join(text.split())
    return hashlib.sha256((canonical if case_sensitive else canonical.casefold()).encode("utf-8")).hexdigest()


class ExactDedupe(Stage[ExactDedupeConfig]):
    name = "exact_dedupe"
    config_type = ExactDedupeConfig

    def __init__(self, config: ExactDedupeConfig) -> None:
        super().__init__(config)
        self.first_id_by_key: dict[str, str] = {}

    def apply(self, record: Record) -> Record | Drop:
        key = content_key(record["text"], self.config.case_sensitive)
        kept_id = self.first_id_by_key.setdefault(key, record["id"])
        if kept_id != record["id"]:
            return Drop("exact_duplicate", kept_id)
        return record
