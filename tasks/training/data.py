"""Pre-training data at one lakeFS commit: the Megatron .bin/.idx and tokenizer that curation published.

The files are read at an explicit commit (never a moving branch), cached locally under the commit id so a retry
or a second run on the same data downloads nothing, and checked against the model before any training.
Samples come from megatron-core's GPTDataset: a seeded shuffle over fixed-length windows, so the n-th sample
is the same on every run and a resumed run continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.training.config import ConfigError, ModelConfig

if TYPE_CHECKING:  # the lakeFS client is imported where it is used: GPU images may train from a local dataset
    from tasks.common.versioned_data import LakeFSEndpoint

TOKENIZED = "tokenized/"
TRAIN, VALID = "train_text_document", "valid_text_document"


@dataclass(frozen=True)
class DatasetInfo:
    """What curation's tokenize step wrote, read from its stats.json."""

    directory: Path | None  # None until fetched
    commit: str
    vocab_size: int
    eod_token_id: int
    pad_token_id: int
    train_tokens: int
    valid_tokens: int

    def check_model(self, model: ModelConfig) -> None:
        """The embedding must cover every token id in the data (a smaller tokenizer leaves rows unused, which is fine)."""
        if self.vocab_size > model.vocab_size:
            raise ConfigError(
                f"preset: the tokenizer of the data at commit {self.commit[:12]} has {self.vocab_size} tokens, more "
                f"than preset {model.preset}'s vocabulary of {model.vocab_size}; token ids past it cannot be embedded. "
                "Re-run curate_corpus with vocab_size <= the preset's, or pick a preset with a larger vocabulary"
            )
        if self.train_tokens < model.seq_length + 1:
            raise ConfigError(
                f"data_commit: the train split at {self.commit[:12]} has {self.train_tokens} tokens, fewer than one "
                f"sequence of {model.seq_length + 1}"
            )


def published_info(endpoint: LakeFSEndpoint, repo: str, ref: str) -> DatasetInfo:
    """What curation published at `ref`, pinned to its commit id; reads two small JSON files only."""
    from tasks.common.versioned_data import VersionedRepo

    versioned = VersionedRepo(endpoint, repo)
    commit_id = versioned.head(ref)
    try:
        stats = json.loads(versioned.get_object(commit_id, f"{TOKENIZED}stats.json"))
        tokenizer = json.loads(versioned.get_object(commit_id, f"{TOKENIZED}tokenizer/tokenizer.json"))
    except Exception as error:
        raise ConfigError(f"data_commit: no tokenized dataset at lakefs://{repo}/{commit_id[:12]} ({error}); "
                          "is this a commit curate_corpus published?") from error
    return _info(stats, tokenizer, commit_id)


def fetch(endpoint: LakeFSEndpoint, repo: str, ref: str, cache_root: Path) -> DatasetInfo:
    """Download tokenized/ at the commit `ref` names into cache_root/<repo>/<commit>/ once (atomically)."""
    info = published_info(endpoint, repo, ref)
    target = Path(cache_root) / repo / info.commit
    if not (target / "stats.json").is_file():
        from tasks.common.versioned_data import VersionedRepo

        versioned = VersionedRepo(endpoint, repo)
        partial = target.with_name(f".{info.commit}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        for path in versioned.list_objects(info.commit, TOKENIZED):
            local = partial / path[len(TOKENIZED):]
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(versioned.get_object(info.commit, path))
        try:
            partial.rename(target)
        except OSError:  # another rank or run cached the same commit first: theirs is identical
            shutil.rmtree(partial, ignore_errors=True)
    return dataclasses.replace(info, directory=target)


def _info(stats: dict, tokenizer: dict, commit: str) -> DatasetInfo:
    pad = tokenizer["model"]["vocab"].get("<|pad|>", stats["eod_token_id"])
    return DatasetInfo(None, commit, stats["vocab_size"], stats["eod_token_id"], pad,
                       stats["splits"]["train"]["tokens"], stats["splits"]["valid"]["tokens"])


class _TokenIds:
    """The few tokenizer facts GPTDataset asks for; the token ids are already in the .bin files."""

    def __init__(self, info: DatasetInfo) -> None:
        self.vocab_size, self.eod, self.pad = info.vocab_size, info.eod_token_id, info.pad_token_id
        self.special_tokens_dict = {"eos_token": info.eod_token_id}
        # GPTDataset names its index cache by these; the commit pins the tokenizer
        self.unique_identifiers = {"class": "tokenizer-at-commit", "commit": info.commit}


def build_datasets(info: DatasetInfo, seq_length: int, train_samples: int, valid_samples: int, seed: int):
    """(train, valid) GPTDatasets; valid falls back to train when curation put no document in valid."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    valid_prefix = VALID if info.valid_tokens > seq_length else TRAIN
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        blend_per_split=[([str(info.directory / TRAIN)], None), ([str(info.directory / valid_prefix)], None), None],
        path_to_cache=str(info.directory / "index-cache"),
        tokenizer=_TokenIds(info),
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        create_attention_mask=False,
    )
    train, valid, _ = BlendedMegatronDatasetBuilder(
        GPTDataset, [train_samples, valid_samples, None], lambda: True, config
    ).build()
    return train, valid


def batch(dataset, first_sample: int, size: int) -> dict:
    """Samples [first_sample, first_sample + size) stacked; the sample index alone decides the content."""
    import torch

    items = [dataset[i] for i in range(first_sample, first_sample + size)]
    return {key: torch.stack([item[key] for item in items]) for key in ("tokens", "labels", "loss_mask", "position_ids")}
