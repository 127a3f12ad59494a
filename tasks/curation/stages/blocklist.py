"""Drop records that mention a blocklisted word, phrase or URL domain (reason `blocklist:<term>`).

Terms match case-insensitively on word boundaries ("ass" does not hit "class"); a domain also matches its
subdomains ("example.com" hits "cdn.example.com" but not "notexample.com").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from tasks.curation.records import Record
from tasks.curation.stage import Drop, Stage


@dataclass(frozen=True)
class BlocklistConfig:
    terms: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()

    @cached_property
    def pattern(self) -> re.Pattern[str] | None:
        """One alternation for all entries; the named group tells which entry matched."""
        alternatives = [rf"\b{re.escape(term)}\b" for term in self.terms]
        alternatives += [rf"(?<![\w.-])(?:[\w-]+\.)*{re.escape(domain)}\b(?!\.\w)" for domain in self.domains]
        if not alternatives:
            return None
        return re.compile("|".join(f"({alternative})" for alternative in alternatives), re.IGNORECASE)

    def entry(self, group_index: int) -> str:
        return (*self.terms, *self.domains)[group_index - 1]


class Blocklist(Stage[BlocklistConfig]):
    name = "blocklist"
    config_type = BlocklistConfig

    def apply(self, record: Record) -> Record | Drop:
        pattern = self.config.pattern
        match = pattern.search(record["text"]) if pattern else None
        if match is None:
            return record
        term = self.config.entry(match.lastindex or 0)
        return Drop(f"blocklist:{term}", f"matched {match.group()!r} at character {match.start()}")
