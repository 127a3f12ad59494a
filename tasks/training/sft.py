"""Supervised fine-tuning data: prompt/response JSONL on lakeFS, checked before training, tokenised with a chat
template, loss on the response only.

Checks reuse curation rather than repeating it: the curation stages normalise, redact PII and drop exact
duplicates of "prompt + response", then a Great Expectations gate (include/training/sft_expectations.yaml) rules on
what is left. Records with a broken schema or too long for the model are set aside with their reason, never
silently truncated. `python -m tasks.training.sft sample --out DIR` writes the sample set the main job uses.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.common.versioned_data import LakeFSEndpoint, VersionedRepo
from tasks.training.config import ConfigError

SFT_PREFIX = "sft/"
GATE_CONFIG = Path(__file__).resolve().parents[2] / "include" / "training" / "sft_expectations.yaml"
PROMPT_TEMPLATE = "### Question:\n{prompt}\n\n### Answer:\n"
# The same template for transformers' apply_chat_template, written into exported tokenizers
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}### Question:\n{{ message['content'] }}\n\n"
    "### Answer:\n{% elif message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
CHECK_STAGES = ("normalise", "pii", "blocklist", "exact_dedupe")
VALID_FRACTION = 0.1


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    response: str


@dataclass(frozen=True)
class Checked:
    train: list[Example]
    valid: list[Example]
    rejected: list[dict[str, str]]  # {"id", "stage", "reason"}
    gate_summary: str


def parse_rows(data: bytes, source: str) -> tuple[list[Example], list[dict[str, str]]]:
    """Examples from JSONL; a line that is not {"id", "prompt", "response"} strings is rejected, naming the rule."""
    examples, rejected = [], []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            rejected.append({"id": where, "stage": "schema", "reason": "not a JSON object"})
            continue
        bad = [f for f in ("id", "prompt", "response") if not isinstance(row, dict) or not isinstance(row.get(f), str)
               or not row.get(f).strip()]
        if bad:
            rejected.append({"id": str(row.get("id", where)) if isinstance(row, dict) else where, "stage": "schema",
                             "reason": f"field(s) {', '.join(bad)} must be non-empty strings"})
            continue
        examples.append(Example(row["id"], row["prompt"], row["response"]))
    return examples, rejected


def check(examples: Sequence[Example], rejected: list[dict[str, str]]) -> Checked:
    """Curation stages on each example's text, then the gate; raises ConfigError naming sft_data if it fails."""
    from tasks.curation.pipeline import GLOBAL_STAGES, SHARD_STAGES, load_config, run_stages
    from tasks.curation.quality_gate import GateConfig, validate_curated
    from tasks.curation.records import make_record

    settings = load_config()
    stages = [t.from_settings(settings.get(t.name)) for t in (*SHARD_STAGES, *GLOBAL_STAGES) if t.name in CHECK_STAGES]
    by_id = {e.id: e for e in examples}
    records = [make_record(e.id, e.prompt + "\n\n" + e.response, "sft") for e in examples]
    outcome = run_stages(stages, records)
    rejected = rejected + [{"id": q.id, "stage": q.stage, "reason": q.reason} for q in outcome.quarantined]
    changed = {r["id"] for r in outcome.kept if _redacted(r["text"], by_id[r["id"]])}
    rejected += [{"id": i, "stage": "pii", "reason": "holds personal data (curation redacts it; SFT drops the pair)"}
                 for i in sorted(changed)]
    kept = [by_id[r["id"]] for r in outcome.kept if r["id"] not in changed]
    gate = validate_curated([{"id": e.id, "text": e.prompt + "\n\n" + e.response, "source": "sft", "meta": {}}
                             for e in kept], GateConfig.from_yaml(GATE_CONFIG))
    if not gate.success:
        raise ConfigError(f"sft_data: the SFT gate failed: {gate.summary}")
    valid = [e for e in kept if _is_valid(e.id)]
    return Checked([e for e in kept if not _is_valid(e.id)], valid, rejected, gate.summary)


def _redacted(text: str, example: Example) -> bool:
    from tasks.curation.stages.pii import PLACEHOLDERS

    original = example.prompt + "\n\n" + example.response
    return any(text.count(mark) > original.count(mark) for mark in PLACEHOLDERS.values())


def _is_valid(example_id: str) -> bool:
    return hashlib.blake2b(example_id.encode(), digest_size=8).digest()[0] < 256 * VALID_FRACTION


def read_at(endpoint: LakeFSEndpoint, repo: str, ref: str) -> tuple[str, list[Example], list[dict[str, str]]]:
    """(commit id, examples, rejected) of every sft/*.jsonl at the commit `ref` names."""
    versioned = VersionedRepo(endpoint, repo)
    commit = versioned.head(ref)
    paths = [p for p in versioned.list_objects(commit, SFT_PREFIX) if p.endswith(".jsonl")]
    if not paths:
        raise ConfigError(f"sft_commit: no {SFT_PREFIX}*.jsonl at lakefs://{repo}/{commit[:12]}")
    examples, rejected = [], []
    for path in sorted(paths):
        more, bad = parse_rows(versioned.get_object(commit, path), path)
        examples += more
        rejected += bad
    return commit, examples, rejected


class SFTDataset:
    """Samples shaped like GPTDataset's (tokens, labels, loss_mask, position_ids), padded to seq_length; the loss
    mask is 1 only where the label is a response token (the answer and its end-of-text)."""

    def __init__(self, examples: Sequence[Example], tokenizer_file: Path, seq_length: int) -> None:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.eos, self.pad = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|pad|>")
        self.seq_length = seq_length
        self.samples, self.too_long = [], []
        for example in examples:
            prompt = tokenizer.encode(PROMPT_TEMPLATE.format(prompt=example.prompt), add_special_tokens=False).ids
            response = tokenizer.encode(example.response, add_special_tokens=False).ids + [self.eos]
            if len(prompt) + len(response) > seq_length + 1:
                self.too_long.append({"id": example.id, "stage": "length",
                                      "reason": f"{len(prompt) + len(response)} tokens > seq_length + 1"})
            else:
                self.samples.append((prompt, response))
        if not self.samples:
            raise ConfigError(f"sft_data: no example fits seq_length {seq_length}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        prompt, response = self.samples[index % len(self.samples)]
        ids = prompt + response
        mask = [0] * len(prompt) + [1] * len(response)
        padding = self.seq_length + 1 - len(ids)
        ids, mask = ids + [self.pad] * padding, mask + [0] * padding
        return {"tokens": torch.tensor(ids[:-1]), "labels": torch.tensor(ids[1:]),
                "loss_mask": torch.tensor(mask[1:], dtype=torch.float32),
                "position_ids": torch.arange(self.seq_length)}


def sample_set(count: int = 600) -> list[dict[str, str]]:
    """Questions about documented standard-library functions, answered by the first paragraph of the docstring."""
    from tasks.curation.sample_corpus import stdlib_docs

    rows = []
    for doc in stdlib_docs():
        name = doc.id.removeprefix("stdlib:")
        answer = doc.text.split("\n\n")[0].replace("\n", " ").strip()
        if "." in name and 8 <= len(answer.split()) <= 60:
            rows.append({"id": f"sft:{name}", "prompt": f"What does `{name}` do?", "response": answer})
        if len(rows) == count:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.training.sft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    sample = verbs.add_parser("sample", help="write the sample SFT set as DIR/sample.jsonl")
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--count", type=int, default=600)
    checker = verbs.add_parser("check", help="validate the SFT set at a lakeFS commit and print the report")
    checker.add_argument("--repo", required=True)
    checker.add_argument("--sft-commit", default="main")
    args = parser.parse_args(argv)
    if args.verb == "sample":
        args.out.mkdir(parents=True, exist_ok=True)
        rows = sample_set(args.count)
        (args.out / "sample.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        print(f"wrote {len(rows)} examples to {args.out / 'sample.jsonl'}")
        return 0
    try:
        commit, examples, rejected = read_at(LakeFSEndpoint.from_env(), args.repo, args.sft_commit)
        checked = check(examples, rejected)
    except ConfigError as error:
        print(f"error: {error}")
        return 2
    print(json.dumps({"commit": commit, "train": len(checked.train), "valid": len(checked.valid),
                      "rejected": checked.rejected, "gate": checked.gate_summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
