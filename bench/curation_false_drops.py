"""False-drop rate of the curation stages, per rule, on the clean reference corpus (issue 13).

Every record of `tests/tasks/curation/data/reference_corpus.jsonl` (built by `bench/reference_corpus.py` from
package READMEs and changelogs the rules were not written against) is clean, so every drop by a per-record
stage is a false drop. Dedupe is left out: two packages sharing a paragraph is a true duplicate, not a false
drop. Prints a markdown table by rule, then by kind of record, split into `dev` (looked at while fixing rules)
and `holdout` (not looked at).

    .venv/bin/python bench/curation_false_drops.py              # the tables
    .venv/bin/python bench/curation_false_drops.py --show quality:punctuation   # and the records that rule drops
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.curation.pipeline import load_config, run_stages, shard_stages  # noqa: E402
from tasks.curation.records import QuarantineEntry, Record, read_jsonl  # noqa: E402

CORPUS = REPO / "tests" / "tasks" / "curation" / "data" / "reference_corpus.jsonl"
SPLITS = ("dev", "holdout")


def false_drops(records: list[Record]) -> list[QuarantineEntry]:
    """What the shipped per-record stages quarantine out of `records` (all clean)."""
    return run_stages(shard_stages(load_config()), records).quarantined


def _rate(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.2f}%)" if whole else "0"


def table(records: list[Record], dropped: list[QuarantineEntry]) -> str:
    split_of = {r["id"]: r["meta"]["split"] for r in records}
    totals = Counter(r["meta"]["split"] for r in records)
    by_rule: dict[str, Counter[str]] = {}
    for entry in dropped:
        by_rule.setdefault(f"{entry.stage}/{entry.reason}", Counter())[split_of[entry.id]] += 1
    all_drops = Counter(split_of[entry.id] for entry in dropped)
    lines = ["| rule | dev | holdout | all |", "|---|---|---|---|"]
    for rule, counts in sorted(by_rule.items(), key=lambda item: -sum(item[1].values())):
        lines.append(f"| {rule} | " + " | ".join(_rate(counts[s], totals[s]) for s in SPLITS)
                     + f" | {_rate(sum(counts.values()), len(records))} |")
    lines.append("| **total** | " + " | ".join(_rate(all_drops[s], totals[s]) for s in SPLITS)
                 + f" | **{_rate(len(dropped), len(records))}** |")
    kinds = Counter((r["meta"]["kind"], r["meta"]["lines"]) for r in records)
    kind_of = {r["id"]: (r["meta"]["kind"], r["meta"]["lines"]) for r in records}
    kind_drops = Counter(kind_of[entry.id] for entry in dropped)
    lines += ["", "| kind of record | lines | records | false drops |", "|---|---|---|---|"]
    lines += [f"| {kind} | {shape} | {count} | {_rate(kind_drops[(kind, shape)], count)} |"
              for (kind, shape), count in sorted(kinds.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--show", action="append", default=[], metavar="STAGE_REASON",
                        help="also print the dev records dropped for this reason (e.g. quality:punctuation)")
    args = parser.parse_args(argv)
    records, unreadable = read_jsonl(args.corpus.name, args.corpus.read_bytes())
    if unreadable:
        parser.error(f"{args.corpus}: {len(unreadable)} unreadable lines, first {unreadable[0].detail}")
    started = time.perf_counter()
    dropped = false_drops(records)
    seconds = time.perf_counter() - started
    print(f"Reference corpus: {len(records)} clean records from {len({r['source'] for r in records})} "
          f"distributions; shard stages in {seconds:.1f} s\n")
    print(table(records, dropped))
    dev = {r["id"] for r in records if r["meta"]["split"] == "dev"}
    for entry in dropped:
        if entry.reason in args.show and entry.id in dev:
            print(f"\n--- {entry.id} {entry.reason}: {entry.detail}\n{entry.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
