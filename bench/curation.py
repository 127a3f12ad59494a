"""Benchmark the curation pipeline against HF datatrove on the same JSONL corpus: docs/s, MB/s, and the recall
of planted near-duplicates. Prints markdown tables (issue 4).

    .venv/bin/python bench/curation.py            # >= 100 MB corpus (--mb 100)
    .venv/bin/python bench/curation.py --quick    # 5 MB, a fast check
    .venv/bin/python bench/curation.py --executor local,ray              # the two executors beside datatrove
    .venv/bin/python bench/curation.py --executor local,ray --sizes 25,100,400 --skip-datatrove   # scaling

The corpus is built here from the sample corpus' stdlib docstrings (`tasks.curation.sample_corpus`):
background documents are mixes of docstring paragraphs in which no two documents share two paragraphs, so
none is a near duplicate of another; planted near duplicates are copies of background documents with 1-3 %
of their words replaced; planted junk (short, repetitive, bullet-only, '#'-heavy, numeric) is there for the
filters. Rows are shuffled into JSONL shards read by both tools.

Ours runs in this process (main venv): Quality then FuzzyDedupe, the two stages equivalent to datatrove's
GopherRepetitionFilter + GopherQualityFilter + MinHash stages 1-4, which run as a subprocess with
`.venv-bench/bin/python bench/datatrove_pipeline.py` (see bench/README.md). Both are timed end to end, wall
clock, reading the shards and writing the survivors as JSONL, one worker process each.

`--executor local,ray` adds a row per curation executor (issue 16): Quality, then exact and fuzzy dedupe, each in
a child process: `local` filters shard by shard and dedupes in one process (the steps' shape), `ray` is
`tasks.curation.ray_executor` on local Ray with every core; both read the shards and write the curated corpus and
quarantine, which must be byte-identical. Peak RSS of the driver and of each Ray process is sampled every 0.2 s.
`--sizes` repeats that at several corpus sizes for the scaling table (wall time, cost per GB, peak memory).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasketch import MinHashLSH  # noqa: E402

from tasks.curation import ray_executor  # noqa: E402
from tasks.curation.dedupe import shingles  # noqa: E402
from tasks.curation.pipeline import global_stages, load_config, run_stages, shard_stages  # noqa: E402
from tasks.curation.records import make_record, read_jsonl, to_jsonl  # noqa: E402
from tasks.curation.sample_corpus import stdlib_docs  # noqa: E402
from tasks.curation.stage import Stage  # noqa: E402
from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupe  # noqa: E402
from tasks.curation.stages.quality import Quality  # noqa: E402
from tasks.curation.streams import FolderStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
DATATROVE_SCRIPT = REPO / "bench" / "datatrove_pipeline.py"
SOURCE = "bench-curation"
MIN_PARAGRAPH_WORDS = 8
SHARD_MB = 12.5
NEAR_DUP_SHARE = 0.02
JUNK_SHARE = 0.01
EDIT_RATES = (0.01, 0.02, 0.03)
MIN_ORIGINAL_WORDS = 60
_WORD = re.compile(r"[A-Za-z]{3,}")


# --- corpus -------------------------------------------------------------------------------------


@dataclass
class Corpus:
    shard_dir: Path
    docs: int
    bytes: int
    background: set[str]
    junk: dict[str, str]                                   # id -> kind
    pairs: list[tuple[str, str, float, float]]             # (original id, copy id, edit rate, true Jaccard)
    texts: dict[str, str]
    shingle_words: int
    threshold: float

    @cached_property
    def ids_by_paragraph(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for doc_id, text in self.texts.items():
            for paragraph in set(text.split("\n\n")):
                index.setdefault(paragraph, []).append(doc_id)
        return index

    def best_jaccard(self, doc_id: str, among: set[str]) -> float:
        """True shingle Jaccard of `doc_id` with its closest document in `among`; only documents sharing a
        paragraph with it are compared (background documents share nothing else)."""
        others = {other for paragraph in set(self.texts[doc_id].split("\n\n"))
                  for other in self.ids_by_paragraph.get(paragraph, ()) if other != doc_id and other in among}
        return max((jaccard(self.texts[doc_id], self.texts[other], self.shingle_words) for other in others), default=0.0)


def paragraph_pool() -> list[str]:
    seen: dict[str, None] = {}
    for doc in stdlib_docs():
        for paragraph in doc.text.split("\n\n"):
            if len(paragraph.split()) >= MIN_PARAGRAPH_WORDS:
                seen.setdefault(paragraph.strip())
    return list(seen)


def background_texts(pool: list[str], target_bytes: int, rng: random.Random) -> Iterable[tuple[str, str]]:
    """(id, text) of documents of 3-6 pool paragraphs until `target_bytes` of text; a paragraph pair is used
    by one document at most, so two documents share at most one paragraph (far below any near-dup threshold)."""
    used_pairs: set[tuple[int, int]] = set()
    produced, index = 0, 0
    while produced < target_bytes:
        chosen = sorted(rng.sample(range(len(pool)), rng.randint(3, 6)))
        pairs = list(combinations(chosen, 2))
        if any(pair in used_pairs for pair in pairs):
            continue
        used_pairs.update(pairs)
        rng.shuffle(chosen)
        text = "\n\n".join(pool[i] for i in chosen)
        produced += len(text.encode("utf-8"))
        yield f"bg:{index:07d}", text
        index += 1


def junk_text(kind: str, rng: random.Random, vocabulary: list[str]) -> str:
    """A document each filter family is meant to drop; random words keep junk docs distinct from each other."""
    words = lambda count: " ".join(rng.choice(vocabulary) for _ in range(count))  # noqa: E731
    if kind == "short":
        return f"The {words(8)}."
    if kind == "repeated_lines":
        line = f"Click here to {words(6)} and the offers."
        return "\n".join([line] * 12 + [f"The {words(10)}." for _ in range(3)])
    if kind == "repeated_ngram":
        return " ".join(["buy the best"] * 30 + [words(20)]) + "."
    if kind == "bullets":
        return "\n".join(f"- {words(6)}" for _ in range(15))
    if kind == "hashes":
        return " ".join(f"#{word}" for word in words(40).split()) + " and the end of the list."
    if kind == "numbers":
        return "\n".join(f"{rng.randint(1, 99)} {rng.randint(10**5, 10**7)} {rng.randint(10**5, 10**7)} "
                         f"{rng.randint(0, 999)}.{rng.randint(0, 99)} {rng.randint(1, 9)}" for _ in range(20))
    raise ValueError(kind)


JUNK_KINDS = ("short", "repeated_lines", "repeated_ngram", "bullets", "hashes", "numbers")


def replace_words(text: str, rate: float, rng: random.Random, vocabulary: list[str]) -> str:
    """`rate` of the words (at least one) swapped for random vocabulary words, separators kept."""
    tokens = re.split(r"(\s+)", text)
    positions = [i for i, token in enumerate(tokens) if token and not token.isspace()]
    for position in rng.sample(positions, max(1, round(rate * len(positions)))):
        tokens[position] = rng.choice(vocabulary)
    return "".join(tokens)


def jaccard(a: str, b: str, shingle_words: int) -> float:
    first, second = shingles(a, shingle_words), shingles(b, shingle_words)
    return len(first & second) / len(first | second)


def build_corpus(out: Path, target_mb: float, seed: int, config: dict[str, dict[str, Any]]) -> Corpus:
    rng = random.Random(seed)
    pool = paragraph_pool()
    vocabulary = sorted({word.lower() for paragraph in pool for word in _WORD.findall(paragraph)})
    target = int(target_mb * 1e6)
    # JSONL adds ~60 bytes of id/source/escaping per row; planted rows add ~3 %.
    background = dict(background_texts(pool, int(target * 0.95), rng))
    rows: list[tuple[str, str]] = list(background.items())

    junk: dict[str, str] = {}
    for index in range(int(JUNK_SHARE * len(background))):
        kind = JUNK_KINDS[index % len(JUNK_KINDS)]
        junk[f"junk:{kind}:{index:06d}"] = kind
        rows.append((f"junk:{kind}:{index:06d}", junk_text(kind, rng, vocabulary)))

    wanted = int(NEAR_DUP_SHARE * len(background))
    candidates = [doc_id for doc_id, text in background.items() if len(text.split()) >= MIN_ORIGINAL_WORDS]
    sample = rng.sample(candidates, min(len(candidates), wanted * 3 // 2 + 10))
    quality = Quality.from_settings(config.get("quality"))
    passing = [r["id"] for r in quality.process([make_record(i, background[i], SOURCE) for i in sample])]
    shingle_words = int(config.get("fuzzy_dedupe", {}).get("shingle_words", 3))
    pairs = []
    for index, original in enumerate(passing[:wanted]):
        rate = EDIT_RATES[index % len(EDIT_RATES)]
        copy_text = replace_words(background[original], rate, rng, vocabulary)
        copy_id = f"near-dup:{index:06d}"
        rows.append((copy_id, copy_text))
        pairs.append((original, copy_id, rate, jaccard(background[original], copy_text, shingle_words)))

    rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    encoded = [to_jsonl([{"id": doc_id, "text": text, "source": SOURCE}]) for doc_id, text in rows]
    total = sum(map(len, encoded))
    shard_count = max(2, math.ceil(total / (SHARD_MB * 1e6)))
    for shard in range(shard_count):
        part = encoded[shard * len(encoded) // shard_count:(shard + 1) * len(encoded) // shard_count]
        (out / f"part-{shard:04d}.jsonl").write_bytes(b"".join(part))
    threshold = float(config.get("fuzzy_dedupe", {}).get("threshold", 0.8))
    return Corpus(out, len(rows), total, set(background), junk, pairs, dict(rows), shingle_words, threshold)


# --- the two tools --------------------------------------------------------------------------------


@dataclass
class ToolRun:
    name: str
    seconds: float
    passed_filters: set[str]
    output: set[str]
    breakdown: dict[str, float] = field(default_factory=dict)
    load_before: float = 0.0
    filter_drops: Counter[str] = field(default_factory=Counter)   # rule -> documents the filters dropped


def run_ours(corpus: Corpus, out: Path, filters: list[Stage[Any]], dedupe: list[Stage[Any]], name: str) -> ToolRun:
    """Read each shard, filter it, dedupe it against everything before it, write the survivors."""
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    breakdown = {"read": 0.0, "filters": 0.0, "dedupe": 0.0, "write": 0.0}
    passed: set[str] = set()
    kept_ids: set[str] = set()
    drops: Counter[str] = Counter()
    started = time.perf_counter()
    for shard in sorted(corpus.shard_dir.glob("*.jsonl")):
        mark = time.perf_counter()
        records, _ = read_jsonl(shard.name, shard.read_bytes())
        breakdown["read"] += time.perf_counter() - mark
        mark = time.perf_counter()
        filter_run = run_stages(filters, records)
        filtered = filter_run.kept
        breakdown["filters"] += time.perf_counter() - mark
        mark = time.perf_counter()
        kept = run_stages(dedupe, filtered).kept
        breakdown["dedupe"] += time.perf_counter() - mark
        mark = time.perf_counter()
        (out / shard.name).write_bytes(to_jsonl(kept))
        breakdown["write"] += time.perf_counter() - mark
        passed.update(record["id"] for record in filtered)
        drops.update(entry.reason for entry in filter_run.quarantined)
        kept_ids.update(record["id"] for record in kept)
    return ToolRun(name, time.perf_counter() - started, passed, kept_ids, breakdown, load, drops)


def datatrove_settings(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Our curation.yaml thresholds in datatrove's terms (the mapping is documented in bench/README.md)."""
    quality = Quality.from_settings(config.get("quality")).config
    fuzzy = FuzzyDedupe.from_settings(config.get("fuzzy_dedupe")).config
    lsh = MinHashLSH(threshold=fuzzy.threshold, num_perm=fuzzy.num_perm)  # datasketch's own band choice
    return {
        "quality": {
            "min_doc_words": quality.min_words, "max_doc_words": quality.max_words,
            "min_avg_word_length": quality.min_mean_word_length, "max_avg_word_length": quality.max_mean_word_length,
            "max_symbol_word_ratio": quality.max_symbol_word_ratio,
            "max_bullet_lines_ratio": quality.max_bullet_line_fraction,
            "max_ellipsis_lines_ratio": quality.max_ellipsis_line_fraction,
            "max_non_alpha_words_ratio": quality.min_alpha_word_fraction,
            "min_stop_words": quality.min_stop_words, "stop_words": list(quality.stop_words),
        },
        "repetition": {
            "dup_line_frac": quality.max_duplicate_line_fraction,
            "top_n_grams": sorted([n, limit] for n, limit in quality.max_top_ngram_fraction.items()),
            # Rules we do not have: off, so both tools apply the same set.
            "dup_para_frac": None, "dup_line_char_frac": None, "dup_para_char_frac": None, "dup_n_grams": [],
        },
        "minhash": {"n_grams": fuzzy.shingle_words, "num_buckets": lsh.b, "hashes_per_bucket": lsh.r,
                    "seed": fuzzy.seed},
    }


def read_ids(folder: Path) -> set[str]:
    ids: set[str] = set()
    for path in folder.glob("*.jsonl"):
        with path.open("rb") as lines:
            ids.update(json.loads(line)["id"] for line in lines if line.strip())
    return ids


def run_datatrove(corpus: Corpus, work: Path, settings: dict[str, Any], workers: int) -> ToolRun:
    if not BENCH_PYTHON.exists():
        raise SystemExit(f"{BENCH_PYTHON} is missing: create it as bench/README.md says (datatrove needs its own venv)")
    command = [str(BENCH_PYTHON), str(DATATROVE_SCRIPT), "--input", str(corpus.shard_dir), "--work", str(work),
               "--settings", json.dumps(settings), "--workers", str(workers)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        raise SystemExit(f"datatrove run failed (exit {finished.returncode}):\n{finished.stderr[-4000:]}")
    breakdown = json.loads(finished.stdout.strip().splitlines()[-1])["seconds"]
    drops: Counter[str] = Counter()
    for step in json.loads((work / "logs" / "1" / "stats.json").read_text()):
        drops.update({key.removeprefix("dropped_"): value for key, value in step["stats"].items()
                      if step["name"].startswith("🔻") and key.startswith("dropped_")})
    return ToolRun("datatrove 0.10.1", seconds, read_ids(work / "filtered"), read_ids(work / "output"), breakdown,
                   load, drops)


# --- the executors (issue 16) ------------------------------------------------------------------------

EXECUTOR_FILTERS = ("quality",)  # the filter datatrove has too; then exact and fuzzy dedupe
OUTPUTS = ray_executor.Outputs("curated/corpus.jsonl", "curated/quarantine/", "curated/stats.json")
SAMPLE_SECONDS = 0.2


@dataclass
class Memory:
    """Peak RSS in bytes: the executor's own process (the Ray driver), each Ray worker, Ray's own services. RSS
    counts the pages of Ray's shared object store a process has mapped; `driver_uss` (pages only the driver holds)
    says what the driver itself keeps."""

    driver: int = 0
    driver_uss: int = 0
    workers: dict[int, int] = field(default_factory=dict)
    services: dict[str, int] = field(default_factory=dict)
    total: int = 0


def bench_config(minhash: str) -> dict[str, dict[str, Any]]:
    """curation.yaml, with the MinHash implementation the run asked for."""
    config = load_config()
    config.setdefault("fuzzy_dedupe", {})["minhash"] = minhash
    return config


def curate_in_child(executor: str, shard_dir: Path, out: Path, minhash: str) -> dict[str, float]:
    """The child's side: one executor over the shards, outputs under `out`; returns seconds (startup, pipeline)."""
    config = bench_config(minhash)
    shards = [[path.name] for path in sorted(shard_dir.glob("*.jsonl"))]
    store = FolderStore(shard_dir, out)
    started = time.perf_counter()
    if executor == "ray":
        with ray_executor.ray_session():
            ready = time.perf_counter()
            ray_executor.curate(store, shards, config, OUTPUTS, shard_stage_names=EXECUTOR_FILTERS)
        return {"startup": ready - started, "pipeline": time.perf_counter() - ready}
    filters = [stage for stage in shard_stages(config) if stage.name in EXECUTOR_FILTERS]
    survivors, quarantined = [], []
    for [name] in shards:
        records, rejected = read_jsonl(name, (shard_dir / name).read_bytes())
        filtered = run_stages(filters, records)
        survivors += filtered.kept
        quarantined += [*rejected, *filtered.quarantined]
    deduped = run_stages(global_stages(config), survivors)
    with store.open_writer(OUTPUTS.corpus) as corpus:
        corpus.write(to_jsonl(deduped.kept))
    by_stage: dict[str, list[dict[str, str]]] = {}
    for entry in [*quarantined, *deduped.quarantined]:
        by_stage.setdefault(entry.stage, []).append(entry.to_dict())
    for stage, entries in by_stage.items():
        with store.open_writer(f"{OUTPUTS.quarantine_prefix}{stage}.jsonl") as part:
            part.write(to_jsonl(entries))
    return {"startup": 0.0, "pipeline": time.perf_counter() - started}


def run_executor(corpus: Corpus, executor: str, out: Path, minhash: str) -> tuple[ToolRun, Memory]:
    """Run one executor in a child process, sampling the RSS of it and of every process it starts."""
    import psutil

    command = [sys.executable, __file__, "--child", executor, "--child-corpus", str(corpus.shard_dir),
               "--child-out", str(out), "--minhash", minhash]
    load = os.getloadavg()[0]
    memory = Memory()
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    driver = psutil.Process(child.pid)
    while child.poll() is None:
        sample = 0
        for process in [driver, *_descendants(driver)]:
            try:
                rss, line = process.memory_info().rss, " ".join(process.cmdline())
                uss = process.memory_full_info().uss if process.pid == driver.pid else 0
            except psutil.Error:
                continue
            sample += rss
            if process.pid == driver.pid:
                memory.driver = max(memory.driver, rss)
                memory.driver_uss = max(memory.driver_uss, uss)
            elif line.startswith("ray::"):
                memory.workers[process.pid] = max(memory.workers.get(process.pid, 0), rss)
            else:
                name = process.name()
                memory.services[name] = max(memory.services.get(name, 0), rss)
        memory.total = max(memory.total, sample)
        time.sleep(SAMPLE_SECONDS)
    seconds = time.perf_counter() - started
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{executor} executor failed (exit {child.returncode}):\n{stderr[-4000:]}")
    breakdown = json.loads(stdout.strip().splitlines()[-1])
    dropped = [json.loads(line) for path in (out / OUTPUTS.quarantine_prefix).glob("*.jsonl")
               for line in path.read_bytes().splitlines() if line.strip()]
    filtered_out = {entry["id"] for entry in dropped if entry["stage"] in EXECUTOR_FILTERS}
    drops = Counter(entry["reason"] for entry in dropped if entry["stage"] in EXECUTOR_FILTERS)
    output = {json.loads(line)["id"] for line in (out / OUTPUTS.corpus).read_bytes().splitlines() if line.strip()}
    return ToolRun(f"ours, {executor} executor: quality + dedupe", seconds, set(corpus.texts) - filtered_out, output,
                   breakdown, load, drops), memory


def _descendants(process: Any) -> list[Any]:
    try:
        return process.children(recursive=True)
    except Exception:  # noqa: BLE001 - the child may be exiting between two samples
        return []


def same_outputs(first: Path, second: Path) -> bool:
    files = sorted(path.relative_to(first) for path in first.rglob("*.jsonl"))
    return files == sorted(path.relative_to(second) for path in second.rglob("*.jsonl")) and all(
        (first / path).read_bytes() == (second / path).read_bytes() for path in files)


def scaling_rows(size_mb: float, corpus: Corpus, runs: dict[str, tuple[ToolRun, Memory]], identical: str) -> list[str]:
    mib = 1024 * 1024
    rows = []
    for executor, (run, memory) in runs.items():
        workers = sorted(memory.workers.values())
        worker_cell = (f"{len(workers)}: {workers[0] / mib:,.0f}-{workers[-1] / mib:,.0f}" if workers else "none")
        services = sum(memory.services.values())
        rows.append(f"| {size_mb:g} ({corpus.bytes / 1e6:.1f} MB, {corpus.docs:,} docs) | {executor} | {run.seconds:.1f} "
                    f"| {run.breakdown.get('startup', 0.0):.1f} | {corpus.bytes / 1e6 / run.seconds:.2f} "
                    f"| {run.seconds / (corpus.bytes / 1e9):,.0f} | {memory.driver / mib:,.0f} / {memory.driver_uss / mib:,.0f} "
                    f"| {worker_cell} "
                    f"| {services / mib:,.0f} | {memory.total / mib:,.0f} | {identical} | {run.load_before:.1f} |")
    return rows


SCALING_HEADER = [
    "| corpus | executor | wall s | of which Ray start s | MB/s | s per GB | driver peak RSS / USS MiB "
    "| Ray workers: count, peak RSS MiB each (min-max) | Ray services (raylet, GCS, ...) peak RSS MiB "
    "| all processes, peak RSS MiB | output identical to the other executor | load avg before |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


# --- scoring ------------------------------------------------------------------------------------


@dataclass
class Score:
    eligible_pairs: int          # both members passed the filters, so only dedupe could catch them
    caught_pairs: int            # exactly one member survived dedupe
    unplanted_removed: int       # dedupe removals other than one member of a caught pair
    wrongly_removed: int         # ... of which the true Jaccard with every other filtered document is < threshold
    junk_removed: int
    background_dropped_by_filters: int
    caught_by_rate: dict[float, tuple[int, int]]


def score(run: ToolRun, corpus: Corpus) -> Score:
    eligible = caught = 0
    by_rate: dict[float, list[int]] = {rate: [0, 0] for rate in EDIT_RATES}
    for original, copy, rate, _ in corpus.pairs:
        if original in run.passed_filters and copy in run.passed_filters:
            eligible += 1
            hit = (original in run.output) != (copy in run.output)
            caught += hit
            by_rate[rate][0] += hit
            by_rate[rate][1] += 1
    caught_members = {member for original, copy, _, _ in corpus.pairs
                      if {original, copy} <= run.passed_filters and (original in run.output) != (copy in run.output)
                      for member in (original, copy) if member not in run.output}
    unplanted = (run.passed_filters - run.output) - caught_members
    wrong = sum(corpus.best_jaccard(doc_id, run.passed_filters) < corpus.threshold for doc_id in unplanted)
    return Score(eligible, caught, len(unplanted), wrong, len(set(corpus.junk) - run.output),
                 len(corpus.background - run.passed_filters),
                 {rate: (hit, total) for rate, (hit, total) in by_rate.items()})


def report(corpus: Corpus, runs: list[ToolRun], workers: dict[str, int]) -> str:
    mb = corpus.bytes / 1e6
    lines = [
        f"Corpus: {corpus.docs:,} docs, {mb:.1f} MB in {len(list(corpus.shard_dir.glob('*.jsonl')))} JSONL shards; "
        f"{len(corpus.pairs):,} planted near-duplicate pairs, {len(corpus.junk):,} planted junk docs.",
        "",
        "| pipeline | worker processes | wall s | docs/s | MB/s | kept by filters | kept after dedupe "
        f"| near-dup recall | other docs removed by dedupe (true Jaccard < {corpus.threshold}) | planted junk removed "
        "| load avg before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    scores = {run.name: score(run, corpus) for run in runs}
    for run in runs:
        s = scores[run.name]
        recall = f"{s.caught_pairs / s.eligible_pairs:.3f} ({s.caught_pairs}/{s.eligible_pairs})" if s.eligible_pairs else "n/a"
        lines.append(
            f"| {run.name} | {workers[run.name]} | {run.seconds:.1f} | {corpus.docs / run.seconds:,.0f} "
            f"| {mb / run.seconds:.2f} | {len(run.passed_filters):,} | {len(run.output):,} | {recall} "
            f"| {s.unplanted_removed} ({s.wrongly_removed}) | {s.junk_removed}/{len(corpus.junk)} | {run.load_before:.1f} |")
    if len(runs) >= 2 and runs[1].name.startswith("datatrove"):
        ours, theirs = runs[0], runs[1]
        common = [(o, c) for o, c, _, _ in corpus.pairs
                  if {o, c} <= ours.passed_filters and {o, c} <= theirs.passed_filters]
        caught = {run.name: sum((o in run.output) != (c in run.output) for o, c in common) for run in (ours, theirs)}
        lines += ["", f"Throughput ratio, {ours.name} / datatrove: **{theirs.seconds / ours.seconds:.2f}x**", "",
                  f"Near-dup recall on the {len(common)} planted pairs both tools' filters kept: "
                  + ", ".join(f"{name} {hits / len(common):.3f} ({hits}/{len(common)})" for name, hits in caught.items())
                  if common else "No planted pair passed both tools' filters."]
    lines += ["", "Near-dup recall by share of words replaced (true 3-word-shingle Jaccard of the planted pairs, "
                  "median [min-max]):", "",
              "| words replaced | true Jaccard | " + " | ".join(run.name for run in runs) + " |",
              "|---|---|" + "---|" * len(runs)]
    for rate in EDIT_RATES:
        values = sorted(j for _, _, r, j in corpus.pairs if r == rate)
        jac = f"{values[len(values) // 2]:.2f} [{values[0]:.2f}-{values[-1]:.2f}]" if values else "n/a"
        cells = [f"{scores[r.name].caught_by_rate[rate][0]}/{scores[r.name].caught_by_rate[rate][1]}" for r in runs]
        lines.append(f"| {rate:.0%} | {jac} | " + " | ".join(cells) + " |")
    lines += ["", "Seconds per step:", ""]
    for run in runs:
        lines.append(f"- {run.name}: " + ", ".join(f"{step} {sec:.1f}" for step, sec in run.breakdown.items()))
    lines += ["", "Documents dropped by the filters, by rule:", ""]
    for run in runs:
        lines.append(f"- {run.name}: " + ", ".join(f"{rule} {count:,}" for rule, count in run.filter_drops.most_common()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in MB of JSONL (default 100)")
    parser.add_argument("--quick", action="store_true", help="a 5 MB corpus, for a fast check")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--datatrove-workers", type=int, default=1,
                        help="datatrove worker processes (default 1, like ours; >1 is not a like-for-like comparison)")
    parser.add_argument("--skip-datatrove", action="store_true", help="run ours only")
    parser.add_argument("--full-pipeline", action="store_true",
                        help="also run all seven of our stages (no datatrove counterpart), as an extra row")
    parser.add_argument("--keep", type=Path, help="keep the corpus and outputs under this folder")
    parser.add_argument("--executor", help="comma-separated curation executors to add as rows: local, ray")
    parser.add_argument("--sizes", help="comma-separated corpus sizes in MB: the executors' scaling table instead")
    parser.add_argument("--minhash", choices=["datasketch", "rensa"], default="datasketch",
                        help="fuzzy dedupe's MinHash implementation (curation.yaml fuzzy_dedupe.minhash)")
    parser.add_argument("--child", choices=["local", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--child-corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(curate_in_child(args.child, args.child_corpus, args.child_out, args.minhash)))
        return 0
    target_mb = 5.0 if args.quick else args.mb
    executors = [name for name in (args.executor or "").split(",") if name]
    if args.sizes:
        return scaling(args, [float(size) for size in args.sizes.split(",")], executors or ["local", "ray"])

    config = bench_config(args.minhash)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-curation-"))
    try:
        started = time.perf_counter()
        corpus = build_corpus(root / "corpus", target_mb, args.seed, config)
        print(f"built {corpus.bytes / 1e6:.1f} MB corpus in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        runs, workers, memories = [], {}, {}
        for executor in executors:
            run, memories[executor] = run_executor(corpus, executor, root / f"ours-{executor}", args.minhash)
            runs.append(run)
            workers[run.name] = os.cpu_count() if executor == "ray" else 1
            print(f"{executor} executor: {run.seconds:.1f} s", file=sys.stderr)
        if not executors:
            quality = Quality.from_settings(config.get("quality"))
            fuzzy = FuzzyDedupe.from_settings(config.get("fuzzy_dedupe"))
            runs = [run_ours(corpus, root / "ours", [quality], [fuzzy], "ours: quality + fuzzy_dedupe")]
            workers = {runs[0].name: 1}
            print(f"ours: {runs[0].seconds:.1f} s", file=sys.stderr)
        if not args.skip_datatrove:
            runs.append(run_datatrove(corpus, root / "datatrove", datatrove_settings(config), args.datatrove_workers))
            workers[runs[-1].name] = args.datatrove_workers
            print(f"datatrove: {runs[-1].seconds:.1f} s", file=sys.stderr)
        if args.full_pipeline:
            full = run_ours(corpus, root / "ours-full", shard_stages(config), global_stages(config),
                            "ours: all 7 stages")
            runs.append(full)
            workers[full.name] = 1
        print(report(corpus, runs, workers))
        if len(executors) == 2:
            identical = same_outputs(root / f"ours-{executors[0]}", root / f"ours-{executors[1]}")
            print("\nCurated corpus and quarantine byte-identical across executors: "
                  f"**{'yes' if identical else 'NO'}**\n")
            print("\n".join([*SCALING_HEADER, *scaling_rows(
                target_mb, corpus, {e: (r, memories[e]) for e, r in zip(executors, runs, strict=False)},
                "yes" if identical else "NO")]))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def scaling(args: argparse.Namespace, sizes: list[float], executors: list[str]) -> int:
    """The executors at several corpus sizes: one table row per size and executor."""
    config = bench_config(args.minhash)
    lines = list(SCALING_HEADER)
    for size in sizes:
        root = Path(tempfile.mkdtemp(prefix=f"bench-curation-{size:g}mb-"))
        try:
            corpus = build_corpus(root / "corpus", size, args.seed, config)
            runs = {}
            for executor in executors:
                runs[executor] = run_executor(corpus, executor, root / f"ours-{executor}", args.minhash)
                print(f"{size:g} MB, {executor}: {runs[executor][0].seconds:.1f} s", file=sys.stderr)
            identical = ("yes" if same_outputs(*(root / f"ours-{e}" for e in executors)) else "NO") \
                if len(executors) == 2 else "n/a"
            lines += scaling_rows(size, corpus, runs, identical)
            print(lines[-1], file=sys.stderr)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
