"""The curation steps with their lakeFS IO, one sub-command each: `python -m tasks.curation.steps --help`.

Each step reads its input from a lakeFS ref and writes its output to the run's branch, so the same
command runs in a local subprocess or in a pod; re-running a step overwrites the same paths (idempotent).
Layout on the branch (and on `main` after publish):
    curated/corpus.jsonl, curated/quarantine/*.jsonl, curated/stats.json, curated/gate.json, tokenized/...
Intermediates of one run live under work/ and are removed before the final commit.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from tasks.common.versioned_data import LakeFSEndpoint, Lineage, RefNotFoundError, VersionedRepo
from tasks.curation import pipeline, records

LOOSE_FILES_PER_SHARD = 200
ENV_RAY_ADDRESS = "LLMOPS_RAY_ADDRESS"  # a Ray cluster's address (from the `ray_default` Connection); unset: local Ray
WORK = "work/curation/"
CURATED = "curated/corpus.jsonl"
QUARANTINE = "curated/quarantine/"
STATS = "curated/stats.json"
GATE_REPORT = "curated/gate.json"
TOKENIZED = "tokenized/"


def log(message: str) -> None:
    print(message, flush=True)


# --- run bookkeeping -------------------------------------------------------------------------


class RepositoryNotFoundError(ValueError):
    """Curation reads an existing repository; creating one is the land step's job."""


def open_run(endpoint: LakeFSEndpoint, repo: str, dag_id: str, run_id: str) -> dict[str, str]:
    """Create (or, on retry, reuse) the run's branch; the input commit is the one the branch started from.
    A repository that does not exist is refused, not created: a typo in `repo` must not leave an empty
    repository behind and fail later with "no raw files"."""
    versioned = VersionedRepo(endpoint, repo)
    try:
        main = versioned.default_branch
    except RefNotFoundError as error:
        raise RepositoryNotFoundError(
            f"lakeFS repository {repo!r} does not exist at {endpoint.url}; curate_corpus does not create "
            f"repositories. Check the `repo` Param, or land raw files first: "
            f"python -m tasks.curation.steps land --repo {repo} --source-dir <folder>") from error
    branch = versioned.open_run_branch(dag_id, run_id, source=main)
    input_commit = next(
        c.id for c in versioned.log(branch) if (c.metadata or {}).get("run_id") != run_id
    )
    log(f"run branch {branch} of repository {repo} from input commit {input_commit}")
    return {"repo": repo, "branch": branch, "input_commit": input_commit}


def shards(paths: list[str]) -> list[list[str]]:
    """Each JSONL file is a shard; loose documents are batched. Deterministic for a given listing."""
    raw = sorted(p for p in paths if records.is_supported(p))
    jsonl = [[p] for p in raw if p.lower().endswith(".jsonl")]
    loose = [p for p in raw if not p.lower().endswith(".jsonl")]
    return jsonl + [loose[i : i + LOOSE_FILES_PER_SHARD] for i in range(0, len(loose), LOOSE_FILES_PER_SHARD)]


def list_shards(endpoint: LakeFSEndpoint, repo: str, ref: str, prefix: str) -> list[list[str]]:
    found = shards(VersionedRepo(endpoint, repo).list_objects(ref, prefix))
    if not found:
        raise ValueError(f"no raw files ({', '.join(sorted(records.SUPPORTED_SUFFIXES))}) under "
                         f"lakefs://{repo}/{ref}/{prefix}")
    return found


def shard_cli_args(run: Mapping[str, str], shard_index: int, shard_count: int, params: Mapping[str, Any]) -> list[str]:
    return [
        "shard", "--repo", run["repo"], "--branch", run["branch"], "--input-commit", run["input_commit"],
        "--source-prefix", params["source_prefix"], "--shard", str(shard_index), "--of", str(shard_count),
        "--languages", ",".join(params["languages"]), "--min-words", str(params["min_words"]),
    ]


# --- steps -----------------------------------------------------------------------------------


def curate_shard(
    endpoint: LakeFSEndpoint, repo: str, branch: str, input_commit: str, source_prefix: str,
    shard_index: int, shard_count: int, overrides: Mapping[str, Any],
) -> dict[str, Any]:
    """Per-shard stages (normalise, language, quality, PII, blocklist) over one shard of the raw input."""
    versioned = VersionedRepo(endpoint, repo)
    all_shards = list_shards(endpoint, repo, input_commit, source_prefix)
    if len(all_shards) != shard_count:
        raise ValueError(f"shard count changed: {len(all_shards)} at {input_commit}, the run planned {shard_count}")
    docs, rejected = [], []
    for path in all_shards[shard_index]:
        found, bad = records.read_file(path, versioned.get_object(input_commit, path))
        docs += found
        rejected += bad
    log(f"shard {shard_index + 1}/{shard_count}: {len(docs)} records from {len(all_shards[shard_index])} file(s)")
    result = pipeline.run_stages(pipeline.shard_stages(configured(overrides)), docs)
    name = f"{shard_index:05d}"
    versioned.put_object(branch, f"{WORK}shards/{name}.jsonl", records.to_jsonl(result.kept))
    quarantined = [entry.to_dict() for entry in [*rejected, *result.quarantined]]
    versioned.put_object(branch, f"{WORK}quarantine/{name}.jsonl", records.to_jsonl(quarantined))
    stats = {"read": len(docs) + len(rejected), "unreadable": len(rejected), "stages": result.counters_by_stage}
    versioned.put_object(branch, f"{WORK}stats/{name}.json", json.dumps(stats, sort_keys=True).encode())
    log(f"shard {shard_index + 1}/{shard_count}: kept {len(result.kept)}, quarantined "
        f"{len(rejected) + len(result.quarantined)}; " + _counts_line(result.counters_by_stage))
    return stats


def dedupe(endpoint: LakeFSEndpoint, repo: str, branch: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Exact and fuzzy dedupe across every shard's output, then the curated corpus and its statistics."""
    versioned = VersionedRepo(endpoint, repo)
    shard_paths = sorted(versioned.list_objects(branch, f"{WORK}shards/"))
    docs = [doc for path in shard_paths for doc in read_rows(versioned.get_object(branch, path))]
    log(f"dedupe: {len(docs)} records from {len(shard_paths)} shard(s)")
    result = pipeline.run_stages(pipeline.global_stages(configured(overrides)), docs)
    versioned.put_object(branch, CURATED, records.to_jsonl(result.kept))
    quarantined = [doc for path in sorted(versioned.list_objects(branch, f"{WORK}quarantine/"))
                   for doc in read_rows(versioned.get_object(branch, path))]
    quarantined += [entry.to_dict() for entry in result.quarantined]
    by_stage: dict[str, list] = {}
    for entry in quarantined:
        by_stage.setdefault(entry["stage"], []).append(entry)
    for stage, entries in by_stage.items():
        versioned.put_object(branch, f"{QUARANTINE}{stage}.jsonl", records.to_jsonl(entries))
    shard_stats = [json.loads(versioned.get_object(branch, p)) for p in sorted(versioned.list_objects(branch, f"{WORK}stats/"))]
    stats = {
        "read": sum(s["read"] for s in shard_stats),
        "unreadable": sum(s["unreadable"] for s in shard_stats),
        "curated": len(result.kept),
        "quarantined": len(quarantined),
        "stages": pipeline.merge_counters([s["stages"] for s in shard_stats] + [result.counters_by_stage]),
    }
    versioned.put_object(branch, STATS, json.dumps(stats, indent=2, sort_keys=True).encode())
    log(f"dedupe: kept {len(result.kept)}; " + _counts_line(result.counters_by_stage))
    return stats


def curate_on_ray(
    endpoint: LakeFSEndpoint, repo: str, branch: str, input_commit: str, source_prefix: str,
    overrides: Mapping[str, Any], address: str | None = None, num_cpus: int | None = None,
) -> dict[str, Any]:
    """Every stage, dedupe included, as one Ray Data pipeline: raw shards streamed from the input commit, the
    curated corpus, quarantine and statistics streamed to the run branch in the layout `dedupe` writes. Ray runs on
    this machine's cores unless `address` names a cluster."""
    from tasks.curation import ray_executor
    from tasks.curation.streams import LakeFSStore

    all_shards = list_shards(endpoint, repo, input_commit, source_prefix)
    store = LakeFSStore(endpoint, repo, input_commit, branch)
    outputs = ray_executor.Outputs(CURATED, QUARANTINE, STATS)
    log(f"curate on Ray ({address or 'local'}): {len(all_shards)} shard(s) of lakefs://{repo}/{input_commit}/{source_prefix}")
    with ray_executor.ray_session(address, num_cpus):
        stats = ray_executor.curate(store, all_shards, configured(overrides), outputs, num_cpus=num_cpus)
    log(f"curate on Ray: kept {stats['curated']}, quarantined {stats['quarantined']}; " + _counts_line(stats["stages"]))
    return stats


def gate(
    endpoint: LakeFSEndpoint, repo: str, branch: str, input_commit: str, dag_id: str, run_id: str,
    languages: list[str],
) -> bool:
    """Commit the curated corpus on the run branch, validate it, commit the verdict; main is not touched."""
    from tasks.curation.quality_gate import validate_curated

    versioned = VersionedRepo(endpoint, repo)
    stats = json.loads(versioned.get_object(branch, STATS))
    lineage = Lineage(dag_id, run_id, "quality_gate", input_commit, counts=flat_counts(stats))
    versioned.commit(branch, "Curated corpus, before the quality gate", lineage)
    result = validate_curated(read_rows(versioned.get_object(branch, CURATED)), languages=languages)
    report = {"success": result.success, "summary": result.summary, "details": result.details}
    versioned.put_object(branch, GATE_REPORT, json.dumps(report, indent=2, sort_keys=True, default=str).encode())
    verdict = "passed" if result.success else "FAILED"
    versioned.commit(branch, f"Quality gate {verdict}", Lineage(dag_id, run_id, "quality_gate.report", input_commit))
    log(f"quality gate {verdict}:\n{result.summary}")
    if not result.success:
        log(f"main is unchanged; inspect lakefs://{repo}/{branch}/{GATE_REPORT}")
    return result.success


def tokenize(
    endpoint: LakeFSEndpoint, repo: str, branch: str, vocab_size: int, tokenizer_path: str | None,
    valid_fraction: float,
) -> dict[str, Any]:
    """Train (or reuse a pinned) byte-level BPE and write Megatron indexed datasets under tokenized/.

    `tokenizer_path` None or "" means not set: the DAG's Param is nullable and renders null as "".
    """
    from tasks.curation import tokenize as tok

    versioned = VersionedRepo(endpoint, repo)
    docs = read_rows(versioned.get_object(branch, CURATED))
    with tempfile.TemporaryDirectory() as tmp:
        if tokenizer_path:
            pinned = Path(tmp) / "pinned-tokenizer.json"
            pinned.write_bytes(versioned.get_object(versioned.default_branch, tokenizer_path))
            tokenizer = tok.load_tokenizer(pinned)
            log(f"tokenize: reusing pinned tokenizer {tokenizer_path}")
        else:
            log(f"tokenize: training a byte-level BPE, vocab {vocab_size}, on {len(docs)} documents")
            tokenizer = tok.train_tokenizer([d["text"] for d in docs], vocab_size=vocab_size)
        out = Path(tmp) / "out"
        stats = tok.write_indexed_datasets(docs, tokenizer, out, valid_fraction=valid_fraction)
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            versioned.put_object(branch, TOKENIZED + path.relative_to(out).as_posix(), path.read_bytes())
    summary = dataclasses.asdict(stats)
    log(f"tokenize: {json.dumps(summary, default=str)}")
    return summary


def publish(endpoint: LakeFSEndpoint, run: Mapping[str, str], dag_id: str, run_id: str) -> str:
    """Drop the run's intermediates, commit, and merge to main only if the committed gate report passed."""
    versioned = VersionedRepo(endpoint, run["repo"])
    branch = run["branch"]
    if versioned.branch_exists(branch):
        for path in versioned.list_objects(branch, WORK):
            versioned.delete_object(branch, path)
        stats = json.loads(versioned.get_object(branch, STATS))
        lineage = Lineage(dag_id, run_id, "publish", run["input_commit"], counts=flat_counts(stats))
        versioned.commit(branch, "Curated and tokenised corpus", lineage)
    else:
        lineage = Lineage(dag_id, run_id, "publish", run["input_commit"])

    def gate_problems(commit_id: str) -> list[str]:
        report = json.loads(versioned.get_object(commit_id, GATE_REPORT))
        return [] if report["success"] else [report["summary"]]

    merged = versioned.publish(branch, validate=gate_problems, lineage=lineage)
    log(f"published {branch} to main as commit {merged}")
    return merged


def land(endpoint: LakeFSEndpoint, repo: str, source_dir: Path, prefix: str) -> str:
    """Put a local folder of raw files on main through a landing branch (idempotent: same files, same commit)."""
    versioned = VersionedRepo(endpoint, repo)
    versioned.ensure(storage_namespace=f"local://{repo}")
    files = sorted(p for p in source_dir.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"nothing to land: {source_dir} holds no files")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(source_dir).as_posix().encode() + hashlib.sha256(path.read_bytes()).digest())
    run_id = digest.hexdigest()[:16]
    branch = versioned.open_run_branch("land", run_id)
    for path in files:
        versioned.put_object(branch, str(PurePosixPath(prefix) / path.relative_to(source_dir).as_posix()), path.read_bytes())
    lineage = Lineage("land", run_id, "land", counts={"files": len(files)})
    versioned.commit(branch, f"Land {len(files)} raw files from {source_dir.name}", lineage)
    merged = versioned.publish(branch, validate=lambda commit_id: [], lineage=lineage)
    log(f"landed {len(files)} files under lakefs://{repo}/main/{prefix} (commit {merged})")
    return merged


# --- helpers ---------------------------------------------------------------------------------


def configured(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """include/curation/curation.yaml with a DAG run's Params laid over it, section by section."""
    config = pipeline.load_config()
    for section, settings in overrides.items():
        config.setdefault(section, {}).update(settings)
    return config


def param_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The curation.yaml sections a run's Params override (the flags a sub-command has and was given)."""
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "languages", None):
        overrides["language"] = {"keep": args.languages.split(",")}
    if getattr(args, "min_words", None) is not None:
        overrides["quality"] = {"min_words": args.min_words}
    if getattr(args, "fuzzy_threshold", None):
        overrides["fuzzy_dedupe"] = {"threshold": args.fuzzy_threshold}
    return overrides


def read_rows(data: bytes) -> list[dict[str, Any]]:
    """Rows this pipeline wrote itself (curated records, quarantine entries): JSONL, one object per line."""
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def flat_counts(stats: Mapping[str, Any]) -> dict[str, int]:
    """Stage counters as `stage.counter` integers, the shape lineage metadata stores."""
    counts = {k: int(v) for k, v in stats.items() if isinstance(v, int)}
    for stage, counters in stats.get("stages", {}).items():
        counts.update({f"{stage}.{name}": int(value) for name, value in counters.items()})
    return counts


def _counts_line(counters_by_stage: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(
        f"{stage}: " + ", ".join(f"{k}={v}" for k, v in sorted(counters.items()))
        for stage, counters in counters_by_stage.items()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.curation.steps", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="lakeFS endpoint and credentials come from LAKECTL_SERVER_ENDPOINT_URL, "
        "LAKECTL_CREDENTIALS_ACCESS_KEY_ID and LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY.",
    )
    commands = parser.add_subparsers(dest="step", required=True)

    def on_branch(name: str, help_text: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--repo", required=True, help="lakeFS repository")
        command.add_argument("--branch", required=True, help="the run's branch")
        return command

    shard = on_branch("shard", "per-shard stages over one shard of the raw input")
    shard.add_argument("--input-commit", required=True, help="commit to read raw files from")
    shard.add_argument("--source-prefix", required=True, help="prefix of the raw files, e.g. raw/")
    shard.add_argument("--shard", type=int, required=True, help="0-based shard index")
    shard.add_argument("--of", type=int, required=True, help="number of shards the run planned")
    shard.add_argument("--languages", default="en", help="comma-separated ISO 639-1 codes to keep")
    shard.add_argument("--min-words", type=int, help="override the quality filter's minimum word count")
    dedupe_cmd = on_branch("dedupe", "exact and fuzzy dedupe across all shards; writes curated/")
    dedupe_cmd.add_argument("--fuzzy-threshold", type=float, help="MinHash Jaccard threshold")
    ray_cmd = on_branch("curate-ray", "every stage and dedupe as one Ray Data pipeline; writes curated/")
    ray_cmd.add_argument("--input-commit", required=True, help="commit to read raw files from")
    ray_cmd.add_argument("--source-prefix", required=True, help="prefix of the raw files, e.g. raw/")
    ray_cmd.add_argument("--languages", default="en", help="comma-separated ISO 639-1 codes to keep")
    ray_cmd.add_argument("--min-words", type=int, help="override the quality filter's minimum word count")
    ray_cmd.add_argument("--fuzzy-threshold", type=float, help="MinHash Jaccard threshold")
    ray_cmd.add_argument("--num-cpus", type=int, help="cores for local Ray (default: all this process may use)")
    gate_cmd = on_branch("gate", "commit the curated corpus and run the Great Expectations gate (exit 1 on failure)")
    gate_cmd.add_argument("--input-commit", required=True)
    gate_cmd.add_argument("--run-id", required=True)
    gate_cmd.add_argument("--dag-id", default="curate_corpus")
    gate_cmd.add_argument("--languages", default="en")
    tok = on_branch("tokenize", "byte-level BPE + Megatron indexed datasets under tokenized/")
    tok.add_argument("--vocab-size", type=int, default=8000)
    tok.add_argument("--tokenizer", help="lakeFS path on main of a pinned tokenizer.json; absent or empty = train")
    tok.add_argument("--valid-fraction", type=float, default=0.05)
    land_cmd = commands.add_parser("land", help="put a local folder of raw files on main (via a landing branch); "
                                   "creates the repository if it does not exist")
    land_cmd.add_argument("--repo", required=True)
    land_cmd.add_argument("--source-dir", type=Path, required=True)
    land_cmd.add_argument("--prefix", default="raw/")
    args = parser.parse_args(argv)

    endpoint = LakeFSEndpoint.from_env()
    if args.step == "shard":
        curate_shard(endpoint, args.repo, args.branch, args.input_commit, args.source_prefix, args.shard, args.of,
                     param_overrides(args))
    elif args.step == "dedupe":
        dedupe(endpoint, args.repo, args.branch, param_overrides(args))
    elif args.step == "curate-ray":
        curate_on_ray(endpoint, args.repo, args.branch, args.input_commit, args.source_prefix, param_overrides(args),
                      os.environ.get(ENV_RAY_ADDRESS) or None, args.num_cpus)
    elif args.step == "gate":
        passed = gate(endpoint, args.repo, args.branch, args.input_commit, args.dag_id, args.run_id,
                      args.languages.split(","))
        return 0 if passed else 1
    elif args.step == "tokenize":
        tokenize(endpoint, args.repo, args.branch, args.vocab_size, args.tokenizer, args.valid_fraction)
    elif args.step == "land":
        land(endpoint, args.repo, args.source_dir, args.prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
