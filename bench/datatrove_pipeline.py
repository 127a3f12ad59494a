"""The datatrove side of bench/curation.py: Gopher filters + MinHash dedupe (stages 1-4) on a folder of JSONL
shards, run with `.venv-bench/bin/python` (datatrove needs numpy 2, which the main venv cannot take).

Stage 1 reads the shards, applies GopherRepetitionFilter and GopherQualityFilter, writes the survivors to
`<work>/filtered/` and their MinHash signatures; stages 2 (buckets) and 3 (clusters) find the duplicates;
stage 4 reads `<work>/filtered/` back and writes what survives dedupe to `<work>/output/`. The filter and
MinHash settings arrive as one JSON object (`--settings`), built by bench/curation.py from our
curation.yaml so both tools run the same thresholds. Prints one JSON line: seconds per stage and in all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter


def run(input_dir: Path, work: Path, settings: dict, tasks: int, workers: int) -> dict[str, float]:
    minhash = MinhashConfig(**settings["minhash"])  # default hashing: 64-bit xxhash
    logs = work / "logs"

    def executor(name: str, pipeline: list, stage_tasks: int) -> LocalPipelineExecutor:
        return LocalPipelineExecutor(pipeline=pipeline, tasks=stage_tasks, workers=min(workers, stage_tasks),
                                     logging_dir=str(logs / name))

    stages = {
        "1_filter_and_signatures": executor("1", [
            JsonlReader(str(input_dir), compression=None, glob_pattern="*.jsonl"),
            GopherRepetitionFilter(**settings["repetition"]),
            GopherQualityFilter(**settings["quality"]),
            JsonlWriter(str(work / "filtered"), output_filename="${rank}.jsonl", compression=None),
            MinhashDedupSignature(output_folder=str(work / "signatures"), config=minhash),
        ], tasks),
        "2_buckets": executor("2", [
            MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                                config=minhash),
        ], minhash.num_buckets),
        "3_clusters": executor("3", [
            MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                                config=minhash),
        ], 1),
        "4_filter_duplicates": executor("4", [
            JsonlReader(str(work / "filtered"), compression=None, glob_pattern="*.jsonl"),
            MinhashDedupFilter(input_folder=str(work / "remove_ids")),
            JsonlWriter(str(work / "output"), output_filename="${rank}.jsonl", compression=None),
        ], tasks),
    }
    seconds: dict[str, float] = {}
    for name, stage in stages.items():
        started = time.perf_counter()
        stage.run()
        seconds[name] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="folder of *.jsonl shards ({id, text, ...} per line)")
    parser.add_argument("--work", type=Path, required=True, help="empty folder for intermediates and output")
    parser.add_argument("--settings", required=True, help="JSON: {repetition: {...}, quality: {...}, minhash: {...}}")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per stage")
    args = parser.parse_args(argv)
    shards = sorted(args.input.glob("*.jsonl"))
    if not shards:
        parser.error(f"no *.jsonl under {args.input}")
    # One task per shard, so filtered/<rank>.jsonl lines up with the signatures of that rank in stage 4.
    seconds = run(args.input, args.work, json.loads(args.settings), len(shards), args.workers)
    print(json.dumps({"seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
