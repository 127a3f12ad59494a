"""Presidio's pattern recognizers over a labelled PII set; run by `bench/pii.py` with `.venv-bench/bin/python`.

No spaCy model and no AnalyzerEngine: each predefined recognizer for a type our PII stage has is called
directly (`nlp_artifacts=None`, so no context words raise scores), and overlaps are resolved with Presidio's
own `EntityRecognizer.remove_duplicates`, as its engine does. Reads JSONL documents on stdin, writes one JSON
object: spans per document `[start, end, type, score]` (our type names) and the analysis seconds.
"""

from __future__ import annotations

import json
import sys
import time

import tldextract
from presidio_analyzer import EntityRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)

# The email recognizer checks the domain with tldextract, which would fetch the Public Suffix List; its
# bundled snapshot keeps the benchmark offline.
tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
OURS = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "IP_ADDRESS": "IP_ADDRESS", "CREDIT_CARD": "CREDIT_CARD",
        "US_SSN": "US_SSN", "IBAN_CODE": "IBAN", "ES_NIF": "ES_NIF", "ES_NIE": "ES_NIF"}
RECOGNIZERS = [EmailRecognizer(), PhoneRecognizer(), IpRecognizer(), CreditCardRecognizer(), UsSsnRecognizer(),
               IbanRecognizer(), EsNifRecognizer(), EsNieRecognizer()]


def analyze(text: str) -> list[list]:
    results = []
    for recognizer in RECOGNIZERS:
        results += recognizer.analyze(text, entities=recognizer.supported_entities, nlp_artifacts=None) or []
    return [[r.start, r.end, OURS[r.entity_type], r.score] for r in EntityRecognizer.remove_duplicates(results)]


def main() -> int:
    texts = [json.loads(line)["text"] for line in sys.stdin if line.strip()]
    started = time.perf_counter()
    spans = [analyze(text) for text in texts]
    json.dump({"seconds": time.perf_counter() - started, "spans": spans}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
