"""Our PII detectors vs Microsoft Presidio's pattern recognizers on one labelled set: precision, recall, docs/s.

The labelled set (seeded, generated here) holds sentences with valid identifiers of every type both sides
support (EMAIL, PHONE, IP_ADDRESS, CREDIT_CARD, US_SSN, IBAN, ES_NIF) and invalid look-alikes that must not be
redacted: Luhn-invalid cards, SSNs in never-issued ranges, IBANs with a bad check, NIFs with the wrong letter,
plus order numbers, versions and dates. A predicted span is a true positive when it overlaps a gold span of
the same type. Both sides run one process, one thread; Presidio in `.venv-bench` (bench/README.md) through
`bench/pii_presidio.py`, timed inside that process (imports excluded, as for ours).

    .venv/bin/python bench/pii.py [--docs 3000] [--seed 13]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.curation.stages.pii import find  # noqa: E402
from tasks.curation.stages.pii_checksums import IBAN_LENGTHS, luhn_valid  # noqa: E402

BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
TYPES = ("EMAIL", "PHONE", "IP_ADDRESS", "CREDIT_CARD", "US_SSN", "IBAN", "ES_NIF")
Span = tuple[int, int, str]
LEADS = ("Please note that", "According to the form,", "The clerk wrote down", "In the ticket the customer gave",
         "For the record,", "The archived letter mentions")
TAILS = ("as the reference.", "next to the signature.", "and nothing else.", "in the second field.",
         "before the deadline.")


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _groups(text: str, rng: random.Random, size: int = 4) -> str:
    separator = rng.choice((" ", "-", ""))
    if len(text) == 15:  # American Express prints 4-6-5
        return separator.join((text[:4], text[4:10], text[10:]))
    return separator.join(text[i:i + size] for i in range(0, len(text), size))


def card(rng: random.Random, valid: bool) -> str:
    body = rng.choice(("4", "51", "55", "37")) + _digits(rng, 13 if rng.random() < 0.5 else 12)
    body = body[:15] if body.startswith("37") else body[:15]
    check = next(d for d in "0123456789" if luhn_valid(body + d) == valid)
    number = body + check if not body.startswith("37") else body[:14] + next(
        d for d in "0123456789" if luhn_valid(body[:14] + d) == valid)
    return _groups(number, rng)


def ssn(rng: random.Random, valid: bool) -> str:
    area, group, serial = f"{rng.randint(1, 899):03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"
    area = "667" if area == "666" else area
    if not valid:
        broken = rng.choice(("area0", "area666", "area9", "group", "serial"))
        area = {"area0": "000", "area666": "666", "area9": f"9{rng.randint(0, 99):02d}"}.get(broken, area)
        group, serial = ("00" if broken == "group" else group), ("0000" if broken == "serial" else serial)
    if valid and rng.random() < 0.1:
        return area + group + serial  # unseparated: real forms hold these too
    separator = rng.choice("- ")
    return separator.join((area, group, serial))


def iban(rng: random.Random, valid: bool) -> str:
    country = rng.choice(("DE", "ES", "FR", "GB", "NL", "IT"))
    letters = {"GB": 4, "NL": 4, "IT": 1}.get(country, 0)
    bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(letters))
    bban += _digits(rng, IBAN_LENGTHS[country] - 4 - letters)
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    check = check if valid else (check % 97) + 1
    number = f"{country}{check:02d}{bban}"
    return " ".join(number[i:i + 4] for i in range(0, len(number), 4)) if rng.random() < 0.6 else number


def nif(rng: random.Random, valid: bool) -> str:
    letters = "TRWAGMYFPDXBNJZSQVHLCKE"
    first = rng.choice("0123456789XYZ")
    number = first + _digits(rng, 7)
    value = int(str("XYZ".index(first)) + number[1:] if first in "XYZ" else number)
    letter = letters[value % 23] if valid else letters[(value + rng.randint(1, 22)) % 23]
    return number + letter


def email(rng: random.Random) -> str:
    name = rng.choice(("maria", "john", "li", "ana", "omar")) + rng.choice((".keller", "_doe", "", ".w"))
    return f"{name}{rng.randint(1, 99)}@{rng.choice(('example.org', 'mail.example.com', 'corp.example.co.uk'))}"


def phone(rng: random.Random) -> str:
    return rng.choice((f"({rng.randint(201, 989)}) {rng.randint(200, 999)}-{_digits(rng, 4)}",
                       f"{rng.randint(201, 989)}-{rng.randint(200, 999)}-{_digits(rng, 4)}",
                       f"+44 20 {rng.randint(7000, 8999)} {_digits(rng, 4)}",
                       f"{rng.randint(201, 989)}.{rng.randint(200, 999)}.{_digits(rng, 4)}",
                       f"+1 {rng.randint(201, 989)} {rng.randint(200, 999)} {_digits(rng, 4)}",
                       f"020 {rng.randint(7000, 8999)} {_digits(rng, 4)}",
                       f"+49 30 {rng.randint(100, 999)} {_digits(rng, 5)}"))


def ip(rng: random.Random) -> str:
    return ".".join(str(rng.randint(1, 254)) for _ in range(4))


def decoy(rng: random.Random) -> str:
    """Numbers that are no PII of any type."""
    return rng.choice((f"version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
                       f"order {_digits(rng, 3)}-{_digits(rng, 3)}-{_digits(rng, 3)}",
                       f"{rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                       f"ticket #{_digits(rng, 6)}"))


VALID: dict[str, Callable[[random.Random], str]] = {
    "EMAIL": email, "PHONE": phone, "IP_ADDRESS": ip, "CREDIT_CARD": lambda rng: card(rng, True),
    "US_SSN": lambda rng: ssn(rng, True), "IBAN": lambda rng: iban(rng, True), "ES_NIF": lambda rng: nif(rng, True),
}
INVALID: dict[str, Callable[[random.Random], str]] = {
    "CREDIT_CARD": lambda rng: card(rng, False), "US_SSN": lambda rng: ssn(rng, False),
    "IBAN": lambda rng: iban(rng, False), "ES_NIF": lambda rng: nif(rng, False), "DECOY": decoy,
}


def labelled_set(docs: int, seed: int) -> list[tuple[str, list[Span]]]:
    """(text, gold spans): each document holds one to three valid identifiers or look-alikes."""
    rng = random.Random(seed)
    out = []
    for _ in range(docs):
        text, gold = rng.choice(LEADS), []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.65:
                kind = rng.choice(TYPES)
                value = VALID[kind](rng)
                gold.append((len(text) + 1, len(text) + 1 + len(value), kind))
            else:
                value = INVALID[rng.choice(tuple(INVALID))](rng)
            text += f" {value} {rng.choice(TAILS)}"
        out.append((text, gold))
    return out


def score(dataset: list[tuple[str, list[Span]]], predicted: list[list[Span]]) -> dict[str, Counter[str]]:
    """Per type: tp, fp, fn; a prediction matches an unmatched overlapping gold span of its type."""
    tally: dict[str, Counter[str]] = {kind: Counter() for kind in TYPES}
    for (_, gold), spans in zip(dataset, predicted, strict=True):
        unmatched = list(gold)
        for start, end, kind in spans:
            hit = next((g for g in unmatched if g[2] == kind and start < g[1] and g[0] < end), None)
            if hit:
                unmatched.remove(hit)
                tally[kind]["tp"] += 1
            else:
                tally[kind]["fp"] += 1
        for _, _, kind in unmatched:
            tally[kind]["fn"] += 1
    return tally


def _pr(counts: Counter[str]) -> str:
    precision = counts["tp"] / (counts["tp"] + counts["fp"]) if counts["tp"] + counts["fp"] else 1.0
    recall = counts["tp"] / (counts["tp"] + counts["fn"]) if counts["tp"] + counts["fn"] else 1.0
    return f"{precision:.3f} / {recall:.3f}"


def run_presidio(texts: list[str]) -> tuple[float, list[list[tuple[int, int, str, float]]]]:
    if not BENCH_PYTHON.exists():
        raise SystemExit(f"{BENCH_PYTHON} missing: see bench/README.md for the one-time .venv-bench setup")
    rows = "".join(json.dumps({"text": text}) + "\n" for text in texts)
    done = subprocess.run([str(BENCH_PYTHON), str(REPO / "bench" / "pii_presidio.py")], input=rows, text=True,
                          capture_output=True, check=True)
    result = json.loads(done.stdout)
    return result["seconds"], [[tuple(span) for span in spans] for spans in result["spans"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    dataset = labelled_set(args.docs, args.seed)
    texts = [text for text, _ in dataset]
    started = time.perf_counter()
    ours = [find(text, TYPES) for text in texts]
    ours_seconds = time.perf_counter() - started
    presidio_seconds, presidio = run_presidio(texts)
    rows = {"ours (tasks/curation/stages/pii.py)": (ours_seconds, ours)}
    for threshold in (0.0, 0.5):
        spans = [[(s, e, k) for s, e, k, score_ in doc if score_ >= threshold] for doc in presidio]
        rows[f"Presidio pattern recognizers, score >= {threshold}"] = (presidio_seconds, spans)
    gold = Counter(kind for _, spans in dataset for _, _, kind in spans)
    print(f"Labelled set: {len(dataset)} documents, {sum(gold.values())} PII spans "
          f"({', '.join(f'{k} {gold[k]}' for k in TYPES)}), "
          f"{sum(text.count(' ') for text in texts) // len(texts)} words per document on average\n")
    print("| detector | docs/s | all types P / R | " + " | ".join(TYPES) + " |")
    print("|---|---|---|" + "---|" * len(TYPES))
    for name, (seconds, predicted) in rows.items():
        tally = score(dataset, predicted)
        total = sum(tally.values(), Counter())
        print(f"| {name} | {len(dataset) / seconds:,.0f} | {_pr(total)} | "
              + " | ".join(_pr(tally[kind]) for kind in TYPES) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
