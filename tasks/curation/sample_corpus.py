"""Build a raw sample corpus from real text every Python install has, plus planted dirty records, so the
curation pipeline can be tested and benchmarked offline.

Clean documents are the standard library's module, class and function docstrings, read with `ast` from
the source files (nothing is imported, so no module can print, fail or have side effects), in sorted
module order. Past the number of docstrings available, further documents are mixes of docstring
paragraphs, so `--docs` scales a benchmark without repeating text. They are spread over JSONL shards and
.txt, .md and .html files. Each planted dirty record is listed in `manifest.json` with what the pipeline
must do with it:

    {"expect": "drop", "stage": ..., "reason": ..., "detail_startswith": ...}   # detail_startswith optional
    {"expect": "keep", "redact": {TYPE: count}, "must_keep": [...], "must_not_contain": [...]}
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import random
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tasks.curation.pipeline import load_config, run_stages, shard_stages
from tasks.curation.records import make_record, to_jsonl

DEFAULT_DOCS = 1500
DEFAULT_SEED = 7
MIN_DOC_WORDS = 25
JSONL_SHARDS = 4
SKIPPED_PACKAGES = frozenset({"test", "idlelib", "turtledemo", "lib2to3", "this", "antigravity"})
SOURCE = "python-stdlib"
MANIFEST = "manifest.json"
BOILERPLATE_MARKERS = ("Skip to main content", "All rights reserved", "trackPageView")

HTML_PAGE = """<!DOCTYPE html>
<html><head><title>{title}</title><style>body {{ font-family: sans-serif; }}</style>
<script>window.analytics && window.analytics.trackPageView("{title}");</script></head>
<body><header><a href="#main">Skip to main content</a></header>
<nav><ul><li><a href="/">Home</a></li><li><a href="/library/">Library</a></li><li><a href="/about/">About</a></li></ul></nav>
<main id="main"><h1>{title}</h1>
{body}
</main>
<footer><p>&copy; 2026 Stdlib Docs Mirror. All rights reserved.</p><p><a href="/privacy">Privacy</a></p></footer>
</body></html>
"""

PII_RECORDS: dict[str, tuple[str, dict[str, int], list[str]]] = {
    "dirty:pii-email": (
        "Please send the quarterly report to the finance team before Friday. You can reach the person who "
        "owns the budget at maria.keller@example.org, and copy the auditor at audit-team@corp.example.com "
        "so that both of them have the numbers in time for the review meeting.", {"EMAIL": 2}, []),
    "dirty:pii-phone": (
        "If the delivery does not arrive by noon, call the warehouse on (415) 555-0132 and ask for the "
        "shift lead. For the London office, the number to use is +44 20 7946 0958, and they will open a "
        "ticket with the carrier on your behalf.", {"PHONE": 2}, []),
    "dirty:pii-ip": (
        "The outage started when the load balancer at 192.168.10.25 stopped answering health checks. The "
        "backup node with the address 2001:db8::8a2e:370:7334 took over after two minutes, and the team "
        "restored the primary once the faulty cable had been replaced.", {"IP_ADDRESS": 2}, []),
    "dirty:pii-card": (
        "The customer paid for the order with the card 4111 1111 1111 1111 and asked for a refund to the "
        "second card 5500-0000-0000-0004 when the parcel was lost. The support agent approved it and noted "
        "the case in the refund log for the monthly review.", {"CREDIT_CARD": 2}, []),
    "dirty:pii-not-a-card": (
        "The shipment tracking number 4111 1111 1111 1112 is not a payment card, because it fails the Luhn "
        "check, and it must stay in the text. The courier uses it to find the parcel in the depot and to "
        "tell the customer when it will arrive.", {}, ["4111 1111 1111 1112"]),
    "dirty:pii-ssn-iban": (
        "The payroll form that the office manager filled in last week lists the social security number "
        "536-22-1234 for the new hire and 078 05 1120 for the contractor who joined the team in the spring. The "
        "sample value 000-12-3456 that is printed on every blank copy of the form is not a real number and "
        "never was. The monthly wages of the new hire go to the bank account DE89 3704 0044 0532 0130 00, and "
        "the first attempt, with the typo DE89 3704 0044 0532 0130 01 in it, was rejected by the bank.",
        {"US_SSN": 2, "IBAN": 1}, ["000-12-3456", "DE89 3704 0044 0532 0130 01"]),
    "dirty:pii-api-keys": (
        "Never commit credentials to the repository. The old deploy script had the access key "
        "AKIAIOSFODNN7EXAMPLE in it, the CI job printed the token "
        "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 to its log, and a notebook held the key "
        "sk-proj-Q9w8E7r6T5y4U3i2O1p0A9s8D7f6 in plain text, so all three have been revoked.",
        {"API_KEY": 3}, ["the access key"]),
}

OTHER_LANGUAGES = {
    "de": "Die Stadtbibliothek bleibt wegen Renovierungsarbeiten bis Ende des Monats geschlossen. Bücher, "
          "die in dieser Zeit fällig werden, können ohne Gebühr später zurückgegeben werden. Der Lesesaal im "
          "Rathaus steht allen Besuchern weiterhin von Montag bis Freitag offen.",
    "fr": "La bibliothèque municipale restera fermée jusqu'à la fin du mois pour des travaux de rénovation. "
          "Les livres qui doivent être rendus pendant cette période pourront être rapportés plus tard sans "
          "frais. La salle de lecture de la mairie reste ouverte du lundi au vendredi.",
    "es": "La biblioteca municipal permanecerá cerrada hasta final de mes por obras de renovación. Los libros "
          "que venzan durante este tiempo se podrán devolver más tarde sin ningún recargo. La sala de lectura "
          "del ayuntamiento sigue abierta de lunes a viernes para todos los visitantes.",
    "ru": "Городская библиотека будет закрыта на ремонт до конца месяца. Книги, срок возврата которых "
          "наступает в это время, можно будет вернуть позже без штрафа. Читальный зал в здании мэрии "
          "по-прежнему открыт для всех посетителей с понедельника по пятницу.",
}

GIBBERISH = ("zxqv brmtkpl oqwfnu qwzzrt vkkrplo tzzmxpq lorqvn nnbtkw prqlxz mmvnq xxkwrt plzqv brrnkt "
             "vqwpl ztrmmx kqlpvr wwqnzt rrpxv lqzkv nmtqp zzvkrw qpxlm tkvnrz wpqlz")


@dataclass(frozen=True)
class Doc:
    """One clean document: a stable id and its text."""

    id: str
    text: str


def _module_files(stdlib: Path, name: str) -> list[Path]:
    single = stdlib / f"{name}.py"
    if single.is_file():
        return [single]
    package = stdlib / name
    return sorted(package.rglob("*.py")) if package.is_dir() else []


def _docstrings(path: Path, module: str) -> list[Doc]:
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, OSError):
        return []
    docs: list[Doc] = []

    def visit(node: ast.AST, qualname: str) -> None:
        text = ast.get_docstring(node, clean=True) if isinstance(node, _DOC_NODES) else None
        if text and len(text.split()) >= MIN_DOC_WORDS:
            docs.append(Doc(f"stdlib:{qualname}", text))
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{qualname}.{child.name}")

    visit(tree, module)
    return docs


_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@cache
def stdlib_docs() -> tuple[Doc, ...]:
    """Every standard-library docstring of at least MIN_DOC_WORDS words, deduplicated, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen_texts: set[str] = set()
    seen_ids: set[str] = set()
    docs: list[Doc] = []
    for name in sorted(sys.stdlib_module_names - SKIPPED_PACKAGES):
        if name.startswith("_"):
            continue
        for path in _module_files(stdlib, name):
            if any(part in SKIPPED_PACKAGES or part.startswith("test") for part in path.relative_to(stdlib).parts):
                continue
            module = ".".join(path.relative_to(stdlib).with_suffix("").parts).removesuffix(".__init__")
            for doc in _docstrings(path, module):
                if doc.text not in seen_texts and doc.id not in seen_ids:
                    seen_texts.add(doc.text)
                    seen_ids.add(doc.id)
                    docs.append(doc)
    return tuple(docs)


def _paragraph_mixes(pool: tuple[Doc, ...], count: int, rng: random.Random) -> list[Doc]:
    """Documents of 3-6 paragraphs drawn from the pool, for corpora larger than the stdlib has docstrings."""
    paragraphs = [p for doc in pool for p in doc.text.split("\n\n") if len(p.split()) >= 8]
    return [Doc(f"stdlib-mix:{index:07d}", "\n\n".join(rng.sample(paragraphs, rng.randint(3, 6))))
            for index in range(count)]


def clean_docs(count: int, seed: int) -> list[Doc]:
    pool = stdlib_docs()
    rng = random.Random(seed)
    if count <= len(pool):
        return rng.sample(list(pool), count)
    return [*pool, *_paragraph_mixes(pool, count - len(pool), rng)]


def _html_page(doc: Doc) -> str:
    body = "\n".join(f"<p>{html.escape(paragraph)}</p>" for paragraph in doc.text.split("\n\n"))
    return HTML_PAGE.format(title=html.escape(doc.id.split(":", 1)[1]), body=body)


def _replace_words(text: str, count: int, rng: random.Random) -> str:
    """`count` words swapped for others at distinct positions: a near duplicate, not an exact one."""
    words = text.split(" ")
    for position in rng.sample(range(len(words)), count):
        words[position] = rng.choice(("banana", "orbit", "velvet", "quartz", "lantern", "meadow"))
    return " ".join(words)


def _dup_originals(docs: list[Doc], count: int, rng: random.Random) -> list[Doc]:
    """Long docs the shard stages keep, so their planted copies can only be dropped by dedupe."""
    long_docs = [doc for doc in docs if len(doc.text.split()) >= 120]
    records = [make_record(doc.id, doc.text, SOURCE) for doc in long_docs]
    surviving = {record["id"] for record in run_stages(shard_stages(load_config()), records).kept}
    return rng.sample([doc for doc in long_docs if doc.id in surviving], count)


def build_sample_corpus(docs: int = DEFAULT_DOCS, seed: int = DEFAULT_SEED) -> dict[str, bytes]:
    """{relative path: bytes} of the raw corpus, `manifest.json` included."""
    rng = random.Random(seed)
    clean = clean_docs(docs, seed)
    cut_txt, cut_md, cut_html = len(clean) // 10, 2 * len(clean) // 10, 3 * len(clean) // 10
    files: dict[str, bytes] = {}
    for doc in clean[:cut_txt]:
        files[f"docs/{doc.id.split(':', 1)[1]}.txt"] = doc.text.encode("utf-8")
    for doc in clean[cut_txt:cut_md]:
        files[f"docs/{doc.id.split(':', 1)[1]}.md"] = f"# {doc.id}\n\n{doc.text}\n".encode()
    for doc in clean[cut_md:cut_html]:
        files[f"pages/{doc.id.split(':', 1)[1]}.html"] = _html_page(doc).encode("utf-8")

    shard_rows: list[list[bytes]] = [[] for _ in range(JSONL_SHARDS)]
    jsonl_docs = clean[cut_html:]
    for index, doc in enumerate(jsonl_docs):
        shard_rows[index * JSONL_SHARDS // len(jsonl_docs)].append(_row(doc.id, doc.text))
    early_docs = jsonl_docs[: len(jsonl_docs) * (JSONL_SHARDS - 1) // JSONL_SHARDS]

    manifest: dict[str, dict[str, Any]] = {}
    dirty_rows, unreadable_rows = _plant_records(early_docs, manifest, rng, files)
    last = shard_rows[-1]
    for row in [*dirty_rows, *unreadable_rows]:
        last.insert(rng.randint(0, len(last)), row)
    last_name = f"shards/part-{JSONL_SHARDS - 1:04d}.jsonl"
    for number, row in enumerate(last, start=1):
        if row in unreadable_rows:
            manifest[f"{last_name}:{number}"] = unreadable_rows[row]
    for shard, rows in enumerate(shard_rows):
        files[f"shards/part-{shard:04d}.jsonl"] = b"".join(row + b"\n" for row in rows)
    files[MANIFEST] = json.dumps({"clean_docs": len(clean), "seed": seed, "records": manifest},
                                 indent=2, sort_keys=True).encode("utf-8")
    return files


def _row(record_id: str, text: str) -> bytes:
    return to_jsonl([{"id": record_id, "text": text, "source": SOURCE}]).rstrip(b"\n")


def _drop(stage: str, reason: str, detail_startswith: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"expect": "drop", "stage": stage, "reason": reason}
    if detail_startswith:
        entry["detail_startswith"] = detail_startswith
    return entry


def _keep(redact: dict[str, int], must_keep: list[str], must_not_contain: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"expect": "keep", "redact": redact, "must_keep": must_keep, "must_not_contain": list(must_not_contain)}


def _plant_records(originals_pool: list[Doc], manifest: dict[str, dict[str, Any]], rng: random.Random,
                   files: dict[str, bytes]) -> tuple[list[bytes], dict[bytes, dict[str, Any]]]:
    """Dirty JSONL rows, recorded in `manifest` by id; rows the reader must reject, with their expectation
    (the manifest names them `file:line` once placed); dirty files, added to `files` and `manifest`."""
    config = load_config()
    rows: list[bytes] = []

    def plant(record_id: str, text: str, expectation: dict[str, Any]) -> None:
        rows.append(_row(record_id, text))
        manifest[record_id] = expectation

    originals = _dup_originals(originals_pool, 6, rng)
    exact, near = originals[:3], originals[3:]
    for index, doc in enumerate(exact):
        text = doc.text.upper() if index == 1 else doc.text.replace(" ", "  ") if index == 2 else doc.text
        plant(f"dirty:exact-dup-{index}", text, _drop("exact_dedupe", "exact_duplicate", doc.id))
    for index, doc in enumerate(near):
        plant(f"dirty:near-dup-{index}", _replace_words(doc.text, 3, rng),
              _drop("fuzzy_dedupe", "near_duplicate", doc.id))
    for record_id, (text, redact, must_keep) in PII_RECORDS.items():
        plant(record_id, text, _keep(redact, must_keep))
    for code, text in OTHER_LANGUAGES.items():
        plant(f"dirty:lang-{code}", text, _drop("language", f"language:{code}"))
    plant("dirty:gibberish", GIBBERISH, _drop("language", "language:low_confidence"))
    plant("dirty:number-table", "\n".join(
        f"Quarter {quarter} of {year}: revenue {rng.randint(10**5, 10**7):,} and cost {rng.randint(10**5, 10**7):,}, "
        f"margin {rng.randint(10, 99)}.{rng.randint(0, 9)} percent."
        for year in (2021, 2022, 2023) for quarter in range(1, 5)),
        _drop("quality", "quality:digit_ratio"))
    plant("dirty:repeated-lines", "\n".join(["Click here to subscribe to the newsletter and the offers."] * 12),
          _drop("quality", "quality:duplicate_lines"))
    plant("dirty:empty", "", _drop("normalise", "empty"))
    plant("dirty:whitespace", " \n\t \u200b \n ", _drop("normalise", "empty"))
    max_chars = int(config.get("normalise", {}).get("max_chars", 100_000))
    plant("dirty:oversized", " ".join(doc.text for doc in originals_pool)[: max_chars * 3 // 2].ljust(max_chars + 1),
          _drop("normalise", "oversized"))
    term = config["blocklist"]["terms"][0]
    plant("dirty:blocklist", f"Our agency can help your brand grow on every platform. If you want to {term} "
          "for your account, send us a message and we will set up a package that fits the size of your page.",
          _drop("blocklist", f"blocklist:{term}"))
    plant("dirty:mojibake", "The cafÃ© on the corner serves the best crÃ¨me brÃ»lÃ©e in town, and the owner "
          "says that the recipe came from her grandmother, who ran a small bakery near the station for forty years.",
          _keep({}, ["café", "crème brûlée"], ("Ã",)))
    rows.append(b'{"id": "dirty:invalid-utf8-jsonl", "text": "' + bytes(range(0x80, 0xC0)) * 2 + b'", "source": "x"}')
    manifest["dirty:invalid-utf8-jsonl"] = _drop("normalise", "invalid_utf8")

    files["docs/dirty-invalid-utf8.txt"] = b"Header: " + bytes(rng.randrange(0x80, 0x100) for _ in range(400))
    manifest["docs/dirty-invalid-utf8.txt"] = _drop("normalise", "invalid_utf8")
    files["pages/dirty-boilerplate-only.html"] = HTML_PAGE.format(title="", body="").replace("<h1></h1>", "").encode()
    manifest["pages/dirty-boilerplate-only.html"] = _drop("normalise", "empty")
    files["pages/dirty-cookie-wall.html"] = HTML_PAGE.format(
        title="Cookies", body="<p>We use cookies.</p><p><button>Accept all</button> <button>Reject</button></p>",
    ).encode()
    manifest["pages/dirty-cookie-wall.html"] = _drop("quality", "quality:word_count")
    unreadable = {
        b'{"id": "dirty:malformed", "text": "this line was cut off in the middle of a wri':
            _drop("read", "malformed_json"),
        b'{"id": "dirty:missing-text", "source": "' + SOURCE.encode() + b'"}': _drop("read", "missing_field:text"),
    }
    return rows, unreadable


def write_corpus(files: dict[str, bytes], out: Path) -> None:
    for relative, data in files.items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.curation.sample_corpus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write the corpus into")
    parser.add_argument("--docs", type=int, default=DEFAULT_DOCS,
                        help=f"number of clean documents (default {DEFAULT_DOCS}); raise it for benchmarks")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for sampling and planting")
    args = parser.parse_args(argv)
    if args.docs < 40:
        parser.error("--docs must be at least 40 so every kind of dirty record has clean originals to copy")
    files = build_sample_corpus(args.docs, args.seed)
    write_corpus(files, args.out)
    planted = len(json.loads(files[MANIFEST])["records"])
    print(f"wrote {len(files)} files ({sum(map(len, files.values()))} bytes) to {args.out}: "
          f"{args.docs} clean documents, {planted} planted dirty records listed in {MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
