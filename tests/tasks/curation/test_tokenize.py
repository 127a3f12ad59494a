"""Tokenisation into Megatron indexed datasets: what is read back equals what was curated, split by id, and the
saved tokenizer directory loads in transformers and megatron-core; megatron builds a GPT dataset over the result."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tasks.curation import tokenize as tok
from tasks.curation.records import make_record, to_jsonl

# megatron-core warns on import that TransformerEngine and Apex are absent; expected on CPU.
pytestmark = pytest.mark.filterwarnings("ignore:Transformer Engine and Apex:UserWarning")

VOCAB_SIZE = 400
VALID_FRACTION = 0.2
WORDS = "the river runs past old mills héllo naïve café 日本語 テキスト 🙂 don't 42 3.14".split()


def corpus(count: int = 200, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 120)))
        records.append(make_record(f"doc-{i:04d}", f"  {words}.\n\n\tTabs, {i} and trailing spaces  ", "web"))
    return records


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return corpus()


@pytest.fixture(scope="module")
def written(records: list[dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tok.TokenizeStats]:
    out = tmp_path_factory.mktemp("tokenized")
    tokenizer = tok.train_tokenizer([record["text"] for record in records], VOCAB_SIZE)
    return out, tok.write_indexed_datasets(records, tokenizer, out, VALID_FRACTION, seed=3)


def test_training_is_deterministic(records: list[dict]) -> None:
    texts = [record["text"] for record in records]
    first = tok.train_tokenizer(texts, VOCAB_SIZE)
    assert first.to_str() == tok.train_tokenizer(texts, VOCAB_SIZE).to_str()
    assert first.token_to_id(tok.EOD_TOKEN) == 0 and first.token_to_id(tok.PAD_TOKEN) == 1


def test_vocab_below_the_byte_alphabet_is_refused() -> None:
    with pytest.raises(ValueError, match="vocab_size 100 is below 258"):
        tok.train_tokenizer(["some text"], 100)


def test_read_back_equals_curated_text(records: list[dict], written: tuple[Path, tok.TokenizeStats]) -> None:
    from megatron.core.datasets.indexed_dataset import DType, IndexedDataset

    out, stats = written
    tokenizer = tok.load_tokenizer(out / "tokenizer")
    for split in tok.SPLITS:
        expected = [r["text"] for r in records if tok.split_of(r["id"], VALID_FRACTION, seed=3) == split]
        dataset = IndexedDataset(str(tok.dataset_prefix(out, split)))
        assert len(dataset.document_indices) - 1 == len(expected) == stats.splits[split]["documents"]
        assert int(dataset.sequence_lengths.sum()) == stats.splits[split]["tokens"]
        assert dataset[0].dtype == DType.optimal_dtype(stats.vocab_size) == np.uint16
        for position, text in enumerate(expected):
            document = dataset[position].tolist()
            assert document[-1] == stats.eod_token_id and stats.eod_token_id not in document[:-1]
            assert tokenizer.decode(document[:-1], skip_special_tokens=False) == text
    assert 0 < stats.splits["valid"]["documents"] < stats.splits["train"]["documents"]
    assert json.loads((out / "stats.json").read_text()) == stats.to_dict()


def test_rewrite_is_byte_identical(
    records: list[dict], written: tuple[Path, tok.TokenizeStats], tmp_path: Path
) -> None:
    out, _ = written
    tok.write_indexed_datasets(records, tok.load_tokenizer(out / "tokenizer"), tmp_path, VALID_FRACTION, seed=3)
    for name in ("train_text_document.bin", "train_text_document.idx", "valid_text_document.idx", "stats.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_split_depends_on_the_id_alone() -> None:
    ids = [f"record-{i}" for i in range(4000)]
    valid = [i for i in ids if tok.split_of(i, 0.1) == "valid"]
    assert 300 < len(valid) < 500
    assert valid == [i for i in reversed(ids) if tok.split_of(i, 0.1) == "valid"][::-1]
    assert all(tok.split_of(i, 0.0) == "train" for i in ids)


def test_transformers_loads_the_tokenizer_dir(written: tuple[Path, tok.TokenizeStats]) -> None:
    from transformers import PreTrainedTokenizerFast

    out, stats = written
    hf = PreTrainedTokenizerFast.from_pretrained(str(out / "tokenizer"))
    assert hf.eos_token_id == stats.eod_token_id and hf.pad_token == tok.PAD_TOKEN
    text = "  naïve café 🙂 don't , stop ."
    ids = hf.encode(text)
    assert ids == tok.load_tokenizer(out / "tokenizer").encode(text, add_special_tokens=False).ids
    assert hf.decode(ids) == text


def test_megatron_builds_a_gpt_dataset_over_the_result(written: tuple[Path, tok.TokenizeStats]) -> None:
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.tokenizers import MegatronTokenizer

    out, stats = written
    tokenizer = MegatronTokenizer.from_pretrained(str(out / "tokenizer"))
    assert (tokenizer.eod, tokenizer.pad) == (stats.eod_token_id, 1)
    config = GPTDatasetConfig(
        random_seed=1,
        sequence_length=32,
        blend_per_split=[([str(tok.dataset_prefix(out, split))], None) for split in tok.SPLITS] + [None],
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        path_to_cache=str(out / "cache"),
    )
    train, valid, test = BlendedMegatronDatasetBuilder(GPTDataset, [64, 8, None], lambda: True, config).build()
    assert len(train) >= 64 and len(valid) >= 8 and test is None
    assert train[0]["tokens"].shape == (32,)


def test_pinned_tokenizer_without_special_tokens_is_refused(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    bare = tmp_path / "tokenizer.json"
    Tokenizer(models.BPE()).save(str(bare))
    with pytest.raises(ValueError, match=r"lacks the special tokens \['<\|endoftext\|>', '<\|pad\|>'\]"):
        tok.load_tokenizer(bare)


@pytest.mark.parametrize(
    ("text", "rule"),
    [(None, "must be a string, got NoneType"), ("bad \udc80 byte", "holds an undecodable byte at character 4")],
)
def test_a_bad_record_is_named(written: tuple[Path, tok.TokenizeStats], tmp_path: Path, text, rule: str) -> None:
    out, _ = written
    bad = [make_record("ok", "fine text", "web"), {"id": "doc-9", "text": text, "source": "web", "meta": {}}]
    with pytest.raises(ValueError, match=rf"record #1 \(id 'doc-9'\): field 'text' {rule}"):
        tok.write_indexed_datasets(bad, tok.load_tokenizer(out / "tokenizer"), tmp_path, 0.1)


def test_cli_trains_then_reuses_the_pinned_tokenizer(records: list[dict], tmp_path: Path, capsys) -> None:
    curated = tmp_path / "curated.jsonl"
    curated.write_bytes(to_jsonl(records))
    assert tok.main(["--input", str(curated), "--out", str(tmp_path / "a"), "--vocab-size", "300"]) == 0
    trained = json.loads(capsys.readouterr().out)
    pinned = tmp_path / "a" / "tokenizer" / "tokenizer.json"
    assert tok.main(["--input", str(curated), "--out", str(tmp_path / "b"), "--tokenizer", str(pinned)]) == 0
    assert json.loads(capsys.readouterr().out) == trained
    assert (tmp_path / "a" / "train_text_document.bin").read_bytes() == (
        tmp_path / "b" / "train_text_document.bin"
    ).read_bytes()
