from __future__ import annotations

import pytest
from curation_harness import run_stage

from tasks.curation.stages.pii import DETECTORS, Pii, PiiConfig, redact
from tasks.curation.stages.pii_checksums import es_nif_valid, iban_valid, luhn_valid, ssn_valid

CASES = [
    ("mail john.doe@example.com now", "mail <EMAIL> now", {"EMAIL": 1}),
    ("call (415) 555-0132 or +44 20 7946 0958.", "call <PHONE> or <PHONE>.", {"PHONE": 2}),
    ("hosts 192.168.10.25 and 2001:db8::8a2e:370:7334", "hosts <IP_ADDRESS> and <IP_ADDRESS>", {"IP_ADDRESS": 2}),
    ("card 4111 1111 1111 1111, 5500-0000-0000-0004", "card <CREDIT_CARD>, <CREDIT_CARD>", {"CREDIT_CARD": 2}),
    ("key AKIAIOSFODNN7EXAMPLE", "key <API_KEY>", {"API_KEY": 1}),
    ("token ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8", "token <API_KEY>", {"API_KEY": 1}),
    ("use sk-proj-Q9w8E7r6T5y4U3i2O1p0A9s8D7f6 here", "use <API_KEY> here", {"API_KEY": 1}),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6", "Authorization: Bearer <API_KEY>", {"API_KEY": 1}),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key = <API_KEY>",
     {"API_KEY": 1}),
    ("SSN 536-22-1234 or 536 22 1234.", "SSN <US_SSN> or <US_SSN>.", {"US_SSN": 2}),
    ("pay to DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432.", "pay to <IBAN> or <IBAN>.", {"IBAN": 2}),
    ("DNI 12345678Z, NIE X1234567L", "DNI <ES_NIF>, NIE <ES_NIF>", {"ES_NIF": 2}),
]


@pytest.mark.parametrize(("text", "expected", "counts"), CASES)
def test_each_type_gets_its_placeholder(text: str, expected: str, counts: dict[str, int]) -> None:
    assert redact(text) == (expected, counts)


@pytest.mark.parametrize("text", [
    "tracking 4111 1111 1111 1112 is not a card",   # fails Luhn: neither a card nor a phone number
    "build 3.11.4.2.1 was released; see RFC 2822 and section 1.2.3.",
    "token = generate_tokens_from_readline and a time 12:30:45",
    "the loopback ::1 and the range 1-10",
    # SSNs never issued: area 000, 666, 900-999; group 00; serial 0000; and two of them side by side
    "ids 000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000",
    "a 3-3-4 phone shape is not an SSN: order 123-456-789 and a bare 536221234",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad check and DE89 3704 0044 0532 0130 is too short",
    "NIF 12345678A has the wrong letter",
])
def test_lookalikes_are_left_alone(text: str) -> None:
    assert redact(text) == (text, {})


def test_checksums() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert ssn_valid("536", "22", "1234") and ssn_valid("899", "01", "0001")
    assert not any(ssn_valid(*parts) for parts in (("000", "22", "1234"), ("666", "22", "1234"),
                                                   ("900", "22", "1234"), ("536", "00", "1234"), ("536", "22", "0000")))
    assert iban_valid("DE89370400440532013000") and iban_valid("NO9386011117947")
    assert not iban_valid("DE89370400440532013001") and not iban_valid("XX89370400440532013000")
    assert es_nif_valid("12345678Z") and es_nif_valid("X1234567L") and not es_nif_valid("12345678A")


def test_every_type_has_a_test_case() -> None:
    redacted = {kind for _, _, counts in CASES for kind in counts}
    assert redacted == set(DETECTORS)


def test_redaction_never_drops_and_counts_per_type_and_record() -> None:
    stage = Pii(PiiConfig())
    kept = run_stage(stage, ["a@b.example and c@d.example", "nothing here", "ip 10.0.0.1"])
    assert [r["meta"].get("pii") for r in kept] == [{"EMAIL": 2}, None, {"IP_ADDRESS": 1}]
    assert stage.counters["redacted:EMAIL"] == 2 and stage.counters["redacted_records"] == 2
    assert stage.counters["dropped"] == 0


def test_types_can_be_switched_off() -> None:
    assert redact("a@b.example 10.0.0.1", ("EMAIL",)) == ("<EMAIL> 10.0.0.1", {"EMAIL": 1})
