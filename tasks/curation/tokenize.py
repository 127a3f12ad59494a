"""Tokenise curated records into Megatron indexed datasets (.bin/.idx), the input of pre-training.

A byte-level BPE is trained on the curated texts, or a pinned tokenizer.json is reused so that checkpoints stay
compatible across data refreshes; either way it is saved next to the datasets, because token ids mean nothing
without it. A record goes to train or valid by a hash of its id, so it keeps its split across re-runs and refreshes.

CLI: `python -m tasks.curation.tokenize --input curated.jsonl --out DIR [--vocab-size N | --tokenizer PATH]`.
Layout of DIR: tokenizer/, train_text_document.{bin,idx}, valid_text_document.{bin,idx}, stats.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

EOD_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOD_TOKEN, PAD_TOKEN)
BYTE_ALPHABET_SIZE = 256
SPLITS = ("train", "valid")
DOCUMENT_SUFFIX = "_text_document"
TOKENIZER_DIR = "tokenizer"
ENCODE_BATCH_SIZE = 1024
DEFAULT_SEED = 1234
MEGATRON_TOKENIZER_METADATA = {
    "library": "huggingface",
    "model_type": "gpt",
    "class_name": None,
    "class_path": None,
    "chat_template": None,
}


@dataclass(frozen=True)
class TokenizeStats:
    """What was written; stored as stats.json next to the datasets and in the lakeFS commit's lineage."""

    vocab_size: int
    dtype: str
    eod_token_id: int
    valid_fraction: float
    seed: int
    splits: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A GPT-2 style byte-level BPE: any text round-trips exactly and no token is ever unknown."""
    smallest = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if vocab_size < smallest:
        raise ValueError(f"vocab_size {vocab_size} is below {smallest}: the 256 bytes plus {list(SPECIAL_TOKENS)}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def load_tokenizer(path: Path | str) -> Tokenizer:
    """A pinned tokenizer from a tokenizer.json file or a directory holding one; it must know both special tokens."""
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer.json at {path}")
    tokenizer = Tokenizer.from_file(str(file))
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        raise ValueError(
            f"{file}: tokenizer lacks the special tokens {missing}; the datasets need {EOD_TOKEN} as end of "
            f"document and {PAD_TOKEN} for padding. Pin a tokenizer that has both, or train one (--vocab-size)."
        )
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> Path:
    """tokenizer.json plus the small configs that let transformers (PreTrainedTokenizerFast) and megatron-core
    (MegatronTokenizer) load the directory as it is."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    special = {"bos_token": EOD_TOKEN, "eos_token": EOD_TOKEN, "pad_token": PAD_TOKEN}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "add_prefix_space": False,
        # Byte-level BPE decodes exactly; the default cleanup would alter spaces before punctuation.
        "clean_up_tokenization_spaces": False,
    }
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", special)
    # Lets megatron-core's MegatronTokenizer.from_pretrained(directory) load it through transformers as a GPT tokenizer.
    _write_json(directory / "tokenizer_metadata.json", MEGATRON_TOKENIZER_METADATA)
    return directory


def split_of(record_id: str, valid_fraction: float, seed: int = DEFAULT_SEED) -> str:
    """Return "valid" for about `valid_fraction` of ids, decided by the id alone so record order never matters."""
    digest = hashlib.blake2b(f"{seed}\0{record_id}".encode(), digest_size=8).digest()
    return "valid" if int.from_bytes(digest, "big") / 2**64 < valid_fraction else "train"


def dataset_prefix(out_dir: Path, split: str) -> Path:
    """The path prefix Megatron takes for a split (it appends .bin and .idx)."""
    return Path(out_dir) / f"{split}{DOCUMENT_SUFFIX}"


def write_indexed_datasets(
    records: Sequence[Mapping[str, Any]],
    tokenizer: Tokenizer,
    out_dir: Path,
    valid_fraction: float = 0.05,
    seed: int = DEFAULT_SEED,
) -> TokenizeStats:
    """One document per record (its tokens then EOD) into train/valid .bin/.idx; also saves the tokenizer and
    stats.json. Re-running overwrites the same files with the same bytes."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction {valid_fraction} must lie in [0, 1)")
    for position, record in enumerate(records):
        _check_record(position, record)
    eod_token_id = tokenizer.token_to_id(EOD_TOKEN)
    if eod_token_id is None:
        raise ValueError(f"the tokenizer has no {EOD_TOKEN} token to end documents with")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = tokenizer.get_vocab_size()
    dtype = DType.optimal_dtype(vocab_size)
    builders = {split: IndexedDatasetBuilder(f"{dataset_prefix(out_dir, split)}.bin", dtype=dtype) for split in SPLITS}
    counts = {split: {"documents": 0, "tokens": 0} for split in SPLITS}
    for record_id, document in _documents(records, tokenizer, eod_token_id):
        split = split_of(record_id, valid_fraction, seed)
        builders[split].add_document(document, [len(document)])
        counts[split]["documents"] += 1
        counts[split]["tokens"] += len(document)
    for split, builder in builders.items():
        builder.finalize(f"{dataset_prefix(out_dir, split)}.idx")
    save_tokenizer(tokenizer, out_dir / TOKENIZER_DIR)
    stats = TokenizeStats(vocab_size, dtype.__name__, eod_token_id, valid_fraction, seed, counts)
    _write_json(out_dir / "stats.json", stats.to_dict())
    return stats


def _documents(
    records: Sequence[Mapping[str, Any]], tokenizer: Tokenizer, eod_token_id: int
) -> Iterator[tuple[str, list[int]]]:
    """(id, token ids + EOD) per record, in order; encoded in batches because encode_batch runs in parallel."""
    for start in range(0, len(records), ENCODE_BATCH_SIZE):
        batch = records[start : start + ENCODE_BATCH_SIZE]
        encodings = tokenizer.encode_batch([record["text"] for record in batch], add_special_tokens=False)
        for record, encoding in zip(batch, encodings, strict=True):
            yield record["id"], [*encoding.ids, eod_token_id]


def _check_record(position: int, record: Mapping[str, Any]) -> None:
    where = f"record #{position} (id {record.get('id')!r})"
    for field in ("id", "text"):
        if not isinstance(record.get(field), str):
            raise ValueError(
                f"{where}: field '{field}' must be a string, got {type(record.get(field)).__name__}; "
                "tokenise only records that passed the quality gate"
            )
    try:
        record["text"].encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"{where}: field 'text' holds an undecodable byte at character {error.start}; "
            "the normalise stage must repair or drop such records before tokenising"
        ) from error


def _write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.curation.tokenize",
        description="Train (or reuse) a byte-level BPE and write Megatron train/valid indexed datasets.",
    )
    parser.add_argument("--input", type=Path, required=True, help="curated records, one JSON object per line")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created; files are overwritten)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--vocab-size", type=int, default=8000, help="train a BPE of this size (default: 8000)")
    source.add_argument("--tokenizer", type=Path, help="reuse this pinned tokenizer.json (or a dir holding one)")
    parser.add_argument(
        "--min-frequency", type=int, default=2, help="a pair merges only if seen this often (default: 2)"
    )
    parser.add_argument(
        "--valid-fraction", type=float, default=0.05, help="share of documents in valid (default: 0.05)"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"salts the split hash (default: {DEFAULT_SEED})"
    )
    args = parser.parse_args(argv)

    from tasks.curation.quality_gate import read_curated

    records = read_curated(args.input)
    _progress(f"read {len(records)} records from {args.input}")
    started = time.perf_counter()
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
        _progress(f"loaded pinned tokenizer {args.tokenizer} (vocab {tokenizer.get_vocab_size()})")
    else:
        tokenizer = train_tokenizer((record["text"] for record in records), args.vocab_size, args.min_frequency)
        _progress(
            f"trained byte-level BPE, vocab {tokenizer.get_vocab_size()}, in {time.perf_counter() - started:.1f} s"
        )
    stats = write_indexed_datasets(records, tokenizer, args.out, args.valid_fraction, args.seed)
    tokens = sum(split["tokens"] for split in stats.splits.values())
    elapsed = time.perf_counter() - started
    _progress(
        f"wrote {tokens} tokens to {args.out}; {elapsed:.1f} s in all ({tokens / max(elapsed, 1e-9):,.0f} tokens/s)"
    )
    print(json.dumps(stats.to_dict(), indent=2, sort_keys=True), flush=True)
    return 0


def _progress(message: str) -> None:
    print(f"tokenize: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
