"""A tokenized corpus published on lakeFS the way curate_corpus publishes it, made from the sample corpus's clean
documents (no curation run needed), for the training tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tasks.common.versioned_data import LakeFSEndpoint, Lineage, VersionedRepo
from tasks.curation.tokenize import train_tokenizer, write_indexed_datasets
from tests.stack.harness import REPO


def publish_tokenized(endpoint: LakeFSEndpoint, repo: str, workdir: Path, vocab_size: int = 2000,
                      docs: int = 400) -> str:
    """Generate, tokenize and commit tokenized/ on `repo`'s main; returns the commit id."""
    raw = workdir / "raw"
    subprocess.run([sys.executable, "-m", "tasks.curation.sample_corpus", "--out", str(raw), "--docs", str(docs)],
                   cwd=REPO, check=True, capture_output=True)
    records = [r for path in sorted(raw.rglob("*.jsonl")) for r in _clean_rows(path)]
    out = workdir / "tokenized"
    write_indexed_datasets(records, train_tokenizer([r["text"] for r in records], vocab_size), out, 0.05)
    versioned = VersionedRepo(endpoint, repo)
    versioned.ensure(storage_namespace=f"local://{repo}", protect_default=False)
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        versioned.put_object("main", f"tokenized/{path.relative_to(out)}", path.read_bytes())
    return versioned.commit("main", "tokenized sample corpus", Lineage("tests", "training", "publish_tokenized"))


def _clean_rows(path: Path) -> list[dict]:
    """The well-formed records of a shard; the sample corpus plants broken ones for curation to catch."""
    rows = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("text"), str):
            rows.append(row)
    return rows
