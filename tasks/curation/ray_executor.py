"""The curation pipeline on Ray Data: the same stage objects and the same dedupe functions as the in-process
executor, spread over a Ray cluster (or the cores of this machine), with the same outputs byte for byte.

    shards -> [actors: read the shard as a stream, run the per-record stages] -> records (order, verdict, JSON)
    exact dedupe : content key per kept record -> shuffle (group by key, count) -> the shared keys' members
    fuzzy dedupe : signature + band keys per block -> shuffle (group by band key, count) -> the shared buckets'
                   members -> candidate pairs -> confirmed pairs -> connected components -> one survivor each
    write        : records streamed in input order into the corpus, quarantine per stage, and the counters

Every record has an integer order (shard index << 32 | position in the shard), the key the survivor rule of
`tasks.curation.dedupe` uses. The driver only ever holds the members of shared keys and buckets (duplicates and
their candidates, a few integers each) and one block of the output stream at a time, never the corpus.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.curation import dedupe, pipeline
from tasks.curation.records import READ_STAGE, quarantine, to_jsonl
from tasks.curation.stages.exact_dedupe import ExactDedupe
from tasks.curation.stages.fuzzy_dedupe import FuzzyDedupe
from tasks.curation.streams import Store, record_blocks

REPO_ROOT = Path(__file__).resolve().parents[2]
ORDER_BITS = 32
KEEP, DROP, COUNTERS = "keep", "drop", "counters"
# Ray's object store on this machine: blocks past it spill to disk under the step's temp dir.
OBJECT_STORE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Outputs:
    """Where the curated corpus, the quarantine (one file per stage) and the statistics are written."""

    corpus: str
    quarantine_prefix: str
    stats: str


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[str | None]:
    """Connect to the Ray cluster at `address`, or start Ray on this machine with `num_cpus` cores (all it may use
    by default), bound to 127.0.0.1, with every file it writes (sockets, logs, spilled blocks) in a temp dir of this
    step (yielded); stopped, and the dir removed, at exit. Inside a session already open, it opens none."""
    import ray

    if ray.is_initialized():
        yield None
        return
    temp_dir = None if address else tempfile.mkdtemp(prefix="ray-")
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if temp_dir:
        # local workers import tasks/ from this checkout
        env |= {
            "RAY_AUTH_MODE": "disabled",  # nothing in ~/.ray; the cluster listens on 127.0.0.1 for this step only
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(
                address="local",
                num_cpus=num_cpus or available_cpus(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
                object_store_memory=OBJECT_STORE_BYTES,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # the output is written in input order
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # shuffles as tasks on the cores given: hash shuffles start a pool of aggregator actors (processes) each
        context.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        yield temp_dir
    finally:
        ray.shutdown()
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


class ShardCurator:
    """A Ray actor: reads shards as streams and runs each record through the per-record stages, which it builds
    once (the language model loads once per actor). Emits one row per record and per rejected line, in order,
    then the stage counters of the shard."""

    def __init__(self, store: Store, config: Mapping[str, Any], stage_names: Sequence[str]) -> None:
        self.store = store
        self.stages = [stage for stage in pipeline.shard_stages(config) if stage.name in stage_names]

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, list]]:
        for shard_index, paths in zip(batch["shard"], batch["paths"], strict=True):
            base = int(shard_index) << ORDER_BITS
            position = 0
            before = {stage.name: stage.counters.copy() for stage in self.stages}
            for records, rejected in record_blocks(self.store, list(paths)):
                rows = _rows()
                for entry in rejected:
                    _add(rows, -1, DROP, READ_STAGE, to_jsonl([entry.to_dict()]))
                for record in records:
                    verdict = self._run(record)
                    if isinstance(verdict, dict):
                        _add(rows, base + position, KEEP, "", to_jsonl([verdict]))
                    else:
                        _add(rows, base + position, DROP, verdict.stage, to_jsonl([verdict.to_dict()]))
                    position += 1
                yield rows
            counters = {stage.name: dict(stage.counters - before[stage.name]) for stage in self.stages}
            rows = _rows()
            _add(rows, -1, COUNTERS, "", json.dumps(counters).encode())
            yield rows

    def _run(self, record):
        for stage in self.stages:
            kept = stage.process([record])
            if not kept:
                return stage.quarantine.pop()
            record = kept[0]
        return record


def _rows() -> dict[str, list]:
    return {"order": [], "kind": [], "stage": [], "line": []}


def _add(rows: dict[str, list], order: int, kind: str, stage: str, line: bytes) -> None:
    for column, value in zip(rows, (order, kind, stage, line), strict=True):
        rows[column].append(value)


def curate(
    store: Store,
    shards: Sequence[Sequence[str]],
    config: Mapping[str, Mapping[str, Any]],
    outputs: Outputs,
    shard_stage_names: Sequence[str] | None = None,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """The whole pipeline over `shards` (lists of raw paths, in order) on the Ray session already started;
    returns the statistics it also writes to `outputs.stats`."""
    import ray

    names = [stage.name for stage in pipeline.shard_stages(config)] if shard_stage_names is None else shard_stage_names
    plan = ray.data.from_items(
        [{"shard": index, "paths": list(paths)} for index, paths in enumerate(shards)],
        override_num_blocks=max(1, len(shards)),
    )
    actors = num_cpus or int(ray.cluster_resources()["CPU"])
    pool = ray.data.ActorPoolStrategy(size=min(actors, max(1, len(shards))))
    records = plan.map_batches(
        ShardCurator, fn_constructor_args=(store, config, names), batch_size=1, compute=pool, batch_format="numpy"
    ).materialize()
    exact = ExactDedupe.from_settings(config.get(ExactDedupe.name)).config
    fuzzy = FuzzyDedupe.from_settings(config.get(FuzzyDedupe.name)).config
    signed = records.map_batches(
        _signatures, fn_args=(exact.case_sensitive, fuzzy.hasher()), batch_format="numpy"
    ).materialize()
    exact_drops = _exact_duplicates(signed)
    fuzzy_drops = _near_duplicates(signed, exact_drops, fuzzy.threshold)
    verdicts = {order: (ExactDedupe.name, "exact_duplicate", detail) for order, detail in exact_drops.items()}
    verdicts |= {order: (FuzzyDedupe.name, reason, detail) for order, (reason, detail) in fuzzy_drops.items()}
    return _write(store, records.map_batches(_mark, fn_args=(verdicts,), batch_format="numpy"), outputs, verdicts)


def _signatures(batch: dict[str, np.ndarray], case_sensitive: bool, hasher: dedupe.MinHasher) -> dict[str, np.ndarray]:
    """Per record the per-record stages kept: its order, id, content key, MinHash signature and LSH band keys."""
    kept = batch["kind"] == KEEP
    records = [json.loads(line) for line in batch["line"][kept]]
    texts = [record["text"] for record in records]
    signatures = [hasher.signature(text) for text in texts]
    return {
        "order": batch["order"][kept].astype(np.int64),
        "id": np.array([record["id"] for record in records], dtype=object),
        "key": np.array([dedupe.content_key(text, case_sensitive) for text in texts], dtype=object),
        "signature": np.array(signatures, dtype=np.uint32).reshape(len(texts), hasher.num_perm),
        "bands": np.array([hasher.band_keys(s) for s in signatures], dtype=np.int64).reshape(len(texts), hasher.bands),
    }


def _exact_duplicates(signed) -> dict[int, str]:
    """{order: id of the record it duplicates}: content keys shuffled by key; only shared keys come back."""
    members = _members_of_shared(signed, "key", ["key", "order", "id"])
    first_id_by_key: dict[str, str] = {}
    drops = {}
    for index in np.argsort(members["order"], kind="stable"):
        kept_id = dedupe.exact_duplicate_of(first_id_by_key, members["key"][index], members["id"][index])
        if kept_id is not None:
            drops[int(members["order"][index])] = kept_id
    return drops


def _near_duplicates(signed, exact_drops: Mapping[int, str], threshold: float) -> dict[int, tuple[str, str]]:
    """{order: (reason, detail)}: band keys shuffled; the shared buckets' candidate pairs confirmed and resolved
    into clusters; then the duplicate-id rule over the survivors."""
    bands = signed.map_batches(_band_rows, fn_args=(_orders(exact_drops),), batch_format="numpy")
    members = _members_of_shared(bands, "band", ["band", "order"])
    by_bucket = np.lexsort((members["order"], members["band"]))
    band, order = members["band"][by_bucket], members["order"][by_bucket]
    buckets = np.split(order, np.flatnonzero(np.diff(band)) + 1) if len(band) else []
    pairs = {pair for bucket in buckets for pair in dedupe.bucket_pairs(bucket.tolist())}
    found = _collect(
        signed.map_batches(
            _rows_with,
            fn_args=("order", _orders({o for pair in pairs for o in pair}), ["order", "id", "signature"]),
            batch_format="numpy",
        ),
        ["order", "id", "signature"],
    )
    signatures = dict(zip(found["order"].tolist(), found["signature"], strict=True))
    ids = dict(zip(found["order"].tolist(), found["id"], strict=True))
    survivor_of = dedupe.survivors(dedupe.confirmed(pairs, signatures, threshold))
    drops = {
        member: (
            "near_duplicate",
            dedupe.near_duplicate_detail(ids[survivor], signatures[member], signatures[survivor]),
        )
        for member, survivor in survivor_of.items()
    }
    # the duplicate-id rule: among the records both dedupes kept, the first with an id keeps it
    survivors = signed.map_batches(
        _rows_with, fn_args=("order", _orders([*exact_drops, *drops]), ["order", "id"], True), batch_format="numpy"
    )
    shared_ids = _members_of_shared(survivors, "id", ["id", "order"])
    seen_ids: set[str] = set()
    for index in np.argsort(shared_ids["order"], kind="stable"):
        record_id = shared_ids["id"][index]
        if record_id in seen_ids:
            drops[int(shared_ids["order"][index])] = ("duplicate_id", dedupe.duplicate_id_detail(record_id))
        seen_ids.add(record_id)
    return drops


def _orders(orders) -> np.ndarray:
    return np.fromiter(orders, dtype=np.int64)


def _band_rows(batch: dict[str, np.ndarray], excluded: np.ndarray) -> dict[str, np.ndarray]:
    """(band key, order) for every band of every record not in `excluded`."""
    keep = ~np.isin(batch["order"], excluded)
    bands, orders = batch["bands"][keep], batch["order"][keep]
    return {"band": bands.reshape(-1), "order": np.repeat(orders, bands.shape[1] if bands.ndim == 2 else 0)}


def _rows_with(
    batch: dict[str, np.ndarray], column: str, values: np.ndarray, columns: list[str], without: bool = False
) -> dict[str, np.ndarray]:
    """`columns` of the rows whose `column` value is among `values` (or, `without`, is not)."""
    mask = np.isin(batch[column], values) != without
    return {name: batch[name][mask] for name in columns}


def _members_of_shared(dataset, column: str, columns: list[str]) -> dict[str, np.ndarray]:
    """Rows whose `column` value occurs more than once, as arrays: a shuffle by that column counts each value, and
    only the shared values' rows come back to the driver."""
    from ray.data.aggregate import Count

    counts = dataset.select_columns([column]).groupby(column).aggregate(Count(alias_name="members"))
    shared = _collect(counts.filter(expr="members > 1"), [column])[column]
    if not len(shared):
        return {name: np.array([], dtype=np.int64) for name in columns}
    return _collect(dataset.map_batches(_rows_with, fn_args=(column, shared, columns), batch_format="numpy"), columns)


def _collect(dataset, columns: list[str]) -> dict[str, np.ndarray]:
    """A (small) dataset's columns as numpy arrays on the driver: arrays, not a Python dict per row."""
    parts = list(dataset.iter_batches(batch_format="numpy", batch_size=None))
    if not parts:
        return {name: np.array([], dtype=np.int64) for name in columns}
    return {name: np.concatenate([part[name] for part in parts]) for name in columns}


def _mark(batch: dict[str, np.ndarray], verdicts: Mapping[int, tuple[str, str, str]]) -> dict[str, list]:
    """Turn the kept rows dedupe dropped into quarantine rows (same entry shape as `Stage.settle` writes)."""
    out = {column: list(values) for column, values in batch.items()}
    for index, order in enumerate(out["order"]):
        verdict = verdicts.get(int(order))
        if verdict is not None and out["kind"][index] == KEEP:
            stage, reason, detail = verdict
            entry = quarantine(json.loads(out["line"][index]), stage, reason, detail)
            out["kind"][index], out["stage"][index], out["line"][index] = DROP, stage, to_jsonl([entry.to_dict()])
    return out


def _write(store: Store, marked, outputs: Outputs, verdicts: Mapping[int, tuple[str, str, str]]) -> dict[str, Any]:
    """Stream the rows, in input order, into the corpus and the per-stage quarantine; then the statistics."""
    counters: list[Mapping[str, Mapping[str, int]]] = []
    per_stage: Counter[str] = Counter()
    curated = 0
    with ExitStack() as files:
        corpus = files.enter_context(store.open_writer(outputs.corpus))
        writers: dict[str, Any] = {}
        for batch in marked.iter_batches(batch_format="numpy", batch_size=4096):
            for kind, stage, line in zip(batch["kind"], batch["stage"], batch["line"], strict=True):
                if kind == KEEP:
                    corpus.write(line)
                    curated += 1
                elif kind == DROP:
                    if stage not in writers:
                        writers[stage] = files.enter_context(
                            store.open_writer(f"{outputs.quarantine_prefix}{stage}.jsonl")
                        )
                    writers[stage].write(line)
                    per_stage[stage] += 1
                else:
                    counters.append(json.loads(line))
    after_shard_stages = curated + per_stage[ExactDedupe.name] + per_stage[FuzzyDedupe.name]
    exact = [reason for stage, reason, _ in verdicts.values() if stage == ExactDedupe.name]
    fuzzy = [reason for stage, reason, _ in verdicts.values() if stage == FuzzyDedupe.name]
    counters.append(
        {
            ExactDedupe.name: dedupe.drop_counters(after_shard_stages, exact),
            FuzzyDedupe.name: dedupe.drop_counters(after_shard_stages - len(exact), fuzzy),
        }
    )
    stats = {
        "read": curated + sum(per_stage.values()),
        "unreadable": per_stage[READ_STAGE],
        "curated": curated,
        "quarantined": sum(per_stage.values()),
        "stages": pipeline.merge_counters(counters),
    }
    with store.open_writer(outputs.stats) as out:
        out.write(json.dumps(stats, indent=2, sort_keys=True).encode())
    return stats
