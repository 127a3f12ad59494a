"""The ray executor keeps and quarantines exactly what the local one does, byte for byte: on the sample corpus
through the real steps on lakeFS, and on a generated corpus of planted duplicate clusters (chains included).
Ray starts once for the module, on 2 cores, and must leave no process and no file behind."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo
from tasks.curation import dedupe, pipeline, ray_executor, steps
from tasks.curation.records import read_jsonl, to_jsonl
from tasks.curation.sample_corpus import build_sample_corpus, write_corpus
from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupeConfig
from tasks.curation.streams import FolderStore

OUTPUTS = ray_executor.Outputs(steps.CURATED, steps.QUARANTINE, steps.STATS)


def _ray_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "ray" in " ".join(p.cmdline()).lower()]


@pytest.fixture(scope="module")
def ray_started() -> Iterator[None]:
    with ray_executor.ray_session(num_cpus=2) as temp_dir:
        assert temp_dir and Path(temp_dir).is_dir()
        yield
    assert not Path(temp_dir).exists(), "Ray's temp dir outlived the session"
    left = [p for p in _ray_processes() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"Ray processes outlived the session: {[p.cmdline()[:2] for p in left]}"


def test_sample_corpus_through_the_steps_on_lakefs(ray_started, lakefs_endpoint: LakeFSEndpoint, tmp_path: Path):
    repo = f"ray-{uuid.uuid4().hex[:8]}"
    write_corpus(build_sample_corpus(), tmp_path)
    steps.land(lakefs_endpoint, repo, tmp_path, "raw/")
    versioned = VersionedRepo(lakefs_endpoint, repo)
    overrides = {"language": {"keep": ["en"]}}

    local = steps.open_run(lakefs_endpoint, repo, "curate_corpus", "local")
    planned = steps.list_shards(lakefs_endpoint, repo, local["input_commit"], "raw/")
    for index in range(len(planned)):
        steps.curate_shard(
            lakefs_endpoint, repo, local["branch"], local["input_commit"], "raw/", index, len(planned), overrides
        )
    local_stats = steps.dedupe(lakefs_endpoint, repo, local["branch"], overrides)

    on_ray = steps.open_run(lakefs_endpoint, repo, "curate_corpus", "ray")
    ray_stats = steps.curate_on_ray(lakefs_endpoint, repo, on_ray["branch"], on_ray["input_commit"], "raw/", overrides)

    assert ray_stats == local_stats and local_stats["curated"] > 1000
    outputs = sorted(versioned.list_objects(local["branch"], "curated/"))
    assert outputs == sorted(versioned.list_objects(on_ray["branch"], "curated/"))
    assert len(outputs) > 3
    for path in outputs:
        assert versioned.get_object(local["branch"], path) == versioned.get_object(on_ray["branch"], path), path


def _planted_corpus(folder: Path) -> tuple[list[list[str]], dict[str, str]]:
    """Three shards of unrelated random-word documents, with planted near-duplicate clusters (chains A~B~C whose
    ends are not similar, stars), exact copies differing in case and spacing, and a reused id. Returns the shard
    plan and {member id: the id that must survive its cluster}."""
    rng = random.Random(7)
    vocabulary = [f"w{index}" for index in range(5000)]
    hasher = FuzzyDedupeConfig().hasher()

    def changed(words: list[str], start: int, count: int = 5, spacing: int = 10) -> str:
        copy = list(words)
        for position in range(start, start + count * spacing, spacing):
            copy[position] = f"edit{rng.randrange(10**9)}"
        return " ".join(copy)

    rows = [(f"bg-{index}", " ".join(rng.choices(vocabulary, k=200))) for index in range(240)]
    clusters = []

    def similar(x: str, y: str) -> bool:
        return dedupe.estimated_jaccard(hasher.signature(x), hasher.signature(y)) >= 0.8

    while len(clusters) < 6:  # chains: a~b and b~c (true Jaccard 0.86), a !~ c (0.74), as estimated
        words = rng.choices(vocabulary, k=200)
        a, b, c = changed(words, 5), " ".join(words), changed(words, 105)
        if similar(a, b) and similar(b, c) and not similar(a, c):
            index = len(clusters)
            clusters.append([(f"chain{index}-a", a), (f"chain{index}-b", b), (f"chain{index}-c", c)])
    for index in range(4):  # stars of four
        words = rng.choices(vocabulary, k=200)
        clusters.append([(f"star{index}-{k}", changed(words, 3 + 40 * k, count=2)) for k in range(4)])
    exact = " ".join(rng.choices(vocabulary, k=120))
    clusters.append([("exact-0", exact), ("exact-1", exact.upper()), ("exact-2", exact.replace(" ", "   "))])
    rows += [member for cluster in clusters for member in cluster]
    rows.append(("bg-0", " ".join(rng.choices(vocabulary, k=200))))  # a reused id with another text
    rng.shuffle(rows)
    shards = [rows[i::3] for i in range(3)]
    for index, shard in enumerate(shards):
        (folder / f"part-{index}.jsonl").write_bytes(
            to_jsonl({"id": i, "text": t, "source": "planted"} for i, t in shard)
        )
    position = {
        record_id: (index, shard.index((record_id, text)))
        for index, shard in enumerate(shards)
        for record_id, text in shard
    }
    survivor = {
        record_id: min((m for m, _ in cluster), key=position.__getitem__)
        for cluster in clusters
        for record_id, _ in cluster
    }
    return [[f"part-{index}.jsonl"] for index in range(3)], survivor


def test_planted_clusters_and_chains_resolve_the_same_on_both_executors(ray_started, tmp_path: Path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    shards, survivor = _planted_corpus(raw)
    config = pipeline.load_config()

    stats = ray_executor.curate(FolderStore(raw, out), shards, config, OUTPUTS, shard_stage_names=[])

    records = [r for [path] in shards for r in read_jsonl(path, (raw / path).read_bytes())[0]]
    local = pipeline.run_stages(pipeline.global_stages(config), records)
    assert (out / OUTPUTS.corpus).read_bytes() == to_jsonl(local.kept)
    by_stage: dict[str, list[dict]] = {}
    for entry in local.quarantined:
        by_stage.setdefault(entry.stage, []).append(entry.to_dict())
    for stage, entries in by_stage.items():
        assert (out / f"{OUTPUTS.quarantine_prefix}{stage}.jsonl").read_bytes() == to_jsonl(entries), stage
    assert stats["stages"] == local.counters_by_stage and stats["curated"] == len(local.kept)
    assert json.loads((out / OUTPUTS.stats).read_bytes()) == stats

    kept = {r["id"] for r in local.kept}
    for member, first in survivor.items():
        assert (member in kept) == (member == first), member  # exactly one survivor per cluster, the first
    dropped = {e.id: e for e in local.quarantined}
    for member, first in survivor.items():
        if member != first:
            assert dropped[member].detail.split(" ")[0] == first, member
    assert sum(1 for e in local.quarantined if e.reason == "duplicate_id") == 1
