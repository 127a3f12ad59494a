"""Redact personal data and secrets with typed placeholders (`<EMAIL>`, `<PHONE>`, `<IP_ADDRESS>`,
`<CREDIT_CARD>`, `<API_KEY>`, `<IBAN>`, `<US_SSN>`, `<ES_NIF>`); this stage never drops a record.

Detectors run in priority order and a character claimed by one is not looked at by the next. An identifier
with a checksum or validity rule (`pii_checksums.py`: Luhn, IBAN mod 97, SSN ranges, NIF letter) that fails it
is claimed but left as it is: it is not that identifier, and it must not be half-redacted as a phone number
either. Presidio's pattern recognizers were measured against these on the same labelled set
(`bench/pii.py`, docs/benchmarks.md). Counts per type go to `counters` (`redacted:<TYPE>`) and to the
record's `meta["pii"]`.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tasks.curation.records import Record
from tasks.curation.stage import ConfigError, Drop, Stage
from tasks.curation.stages.pii_checksums import IBAN_LENGTHS, es_nif_valid, iban_valid, luhn_valid, ssn_valid

Span = tuple[int, int]
# A detector yields (start, end, redact?) for each match it claims.
Detector = Callable[[str], Iterator[tuple[int, int, bool]]]

# A secret must hold a digit, so long identifiers such as `token = generate_tokens_from_file` stay.
_SECRET_VALUE = r"(?=[A-Za-z/+_\-]*\d)[A-Za-z0-9/+_\-]{16,}=*"
_API_KEYS = [re.compile(pattern) for pattern in (
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",                            # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",                        # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",                         # Slack
    r"\b(?:sk-(?:proj-)?|[sr]k_(?:live|test)_)" + _SECRET_VALUE,   # OpenAI / Stripe style
    # Only the value is redacted, so `Authorization: Bearer <API_KEY>` still reads as what it was.
    r"\b[Bb]earer\s+(" + _SECRET_VALUE + ")",
    r"(?i:\b[a-z_]*(?:secret|password|passwd|api_?key|token)[a-z_]*)[\"']?\s*[:=]\s*[\"']?(" + _SECRET_VALUE + ")",
)]
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not part of a longer dotted run, so version strings like 3.11.4.2.1 stay.
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\d.]|\.\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{3})[ .-]\d{3}[ .-]\d{4}(?![\w-])"   # NANP-like
    r"|(?<![\w+])\+\d{1,3}(?:[ .-]\d{1,4}){2,5}(?![\w-])"                                # international
)
# Separated as 3-2-4 with one kind of separator; nine bare digits are too often something else.
_SSN = re.compile(r"(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
_IBAN_START = re.compile(r"\b[A-Z]{2}\d{2}(?= ?[A-Z0-9])")
_ES_NIF = re.compile(r"(?<![\w-])([0-9XYZ]\d{7})-?([A-Z])(?![\w-])")
PLACEHOLDERS = {kind: f"<{kind}>" for kind in
                ("API_KEY", "EMAIL", "IBAN", "US_SSN", "CREDIT_CARD", "ES_NIF", "IP_ADDRESS", "PHONE")}


def _regex(pattern: re.Pattern[str]) -> Detector:
    def detect(text: str) -> Iterator[tuple[int, int, bool]]:
        for match in pattern.finditer(text):
            yield match.start(), match.end(), True
    return detect


def _api_keys(text: str) -> Iterator[tuple[int, int, bool]]:
    for pattern in _API_KEYS:
        for match in pattern.finditer(text):
            group = 1 if pattern.groups else 0
            yield match.start(group), match.end(group), True


def _cards(text: str) -> Iterator[tuple[int, int, bool]]:
    for match in _CARD_CANDIDATE.finditer(text):
        yield match.start(), match.end(), luhn_valid(re.sub(r"\D", "", match.group()))


def _ssns(text: str) -> Iterator[tuple[int, int, bool]]:
    for match in _SSN.finditer(text):
        yield match.start(), match.end(), ssn_valid(match.group(1), match.group(3), match.group(4))


def _ibans(text: str) -> Iterator[tuple[int, int, bool]]:
    """Country code, check digits, then exactly that country's length of letters and digits, optionally in
    space-separated groups; what follows must not continue the number."""
    for match in _IBAN_START.finditer(text):
        length, chars, end = IBAN_LENGTHS.get(match.group()[:2], 0), [], match.start()
        while end < len(text) and len(chars) < length:
            if text[end] == " " and chars and end + 1 < len(text) and text[end + 1].isalnum():
                end += 1
            if not (text[end].isascii() and (text[end].isdigit() or text[end].isupper())):
                break
            chars.append(text[end])
            end += 1
        if length and len(chars) == length and not (end < len(text) and text[end].isalnum()):
            yield match.start(), end, iban_valid("".join(chars))


def _es_nifs(text: str) -> Iterator[tuple[int, int, bool]]:
    for match in _ES_NIF.finditer(text):
        yield match.start(), match.end(), es_nif_valid(match.group(1) + match.group(2))


def _ipv6(text: str) -> Iterator[tuple[int, int, bool]]:
    for match in _IPV6_CANDIDATE.finditer(text):
        candidate = match.group()
        if sum(bool(group) for group in candidate.split(":")) < 2:
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield match.start(), match.end(), True


DETECTORS: dict[str, Detector] = {
    "API_KEY": _api_keys,
    "EMAIL": _regex(_EMAIL),
    "IBAN": _ibans,
    "US_SSN": _ssns,  # before cards: two SSNs in a row are a Luhn-valid digit run one time in ten
    "CREDIT_CARD": _cards,
    "ES_NIF": _es_nifs,
    "IP_ADDRESS": lambda text: (*_regex(_IPV4)(text), *_ipv6(text)),
    "PHONE": _regex(_PHONE),
}


@dataclass(frozen=True)
class PiiConfig:
    types: tuple[str, ...] = tuple(DETECTORS)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.types) - set(DETECTORS))
        if unknown:
            raise ConfigError(f"types: unknown PII type(s) {unknown}; known: {sorted(DETECTORS)}")


def find(text: str, types: tuple[str, ...] = tuple(DETECTORS)) -> list[tuple[int, int, str]]:
    """(start, end, type) of every span to redact, in text order; what a detector claims but leaves (a
    Luhn-invalid card) is not listed and no later detector may take it."""
    claimed: list[tuple[int, int, str | None]] = []
    for kind in (kind for kind in DETECTORS if kind in types):
        for start, end, should_redact in DETECTORS[kind](text):
            if not any(start < other_end and other_start < end for other_start, other_end, _ in claimed):
                claimed.append((start, end, kind if should_redact else None))
    return sorted((start, end, kind) for start, end, kind in claimed if kind is not None)


def redact(text: str, types: tuple[str, ...] = tuple(DETECTORS)) -> tuple[str, Counter[str]]:
    """The text with each detected span replaced by its placeholder, and the count per type."""
    counts: Counter[str] = Counter()
    pieces, cursor = [], 0
    for start, end, kind in find(text, types):
        pieces += [text[cursor:start], PLACEHOLDERS[kind]]
        counts[kind] += 1
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces), counts


class Pii(Stage[PiiConfig]):
    name = "pii"
    config_type = PiiConfig

    def apply(self, record: Record) -> Record | Drop:
        text, counts = redact(record["text"], self.config.types)
        if not counts:
            return record
        self.counters["redacted_records"] += 1
        self.counters.update({f"redacted:{kind}": count for kind, count in counts.items()})
        return {**record, "text": text, "meta": {**record["meta"], "pii": dict(counts)}}
