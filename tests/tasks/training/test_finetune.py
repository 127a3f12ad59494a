"""Fine-tuning for real on CPU: a LoRA run on a pre-trained tiny checkpoint exports a PEFT adapter that `peft` loads
onto the exported base and computes what megatron computes; the merged export equals base + adapter; the loss
ignores prompt tokens; bad settings are refused before training, naming the setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.common.versioned_data import LakeFSEndpoint, Lineage, VersionedRepo
from tests.stack.harness import REPO
from tests.tasks.training.corpus import publish_tokenized

pytestmark = pytest.mark.slow
REPO_NAME = "finetune-run"


def cli(endpoint: LakeFSEndpoint, module: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **endpoint.to_env(), "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore",
           "MLFLOW_TRACKING_URI": ""}
    return subprocess.run([sys.executable, "-m", module, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def trained(lakefs_endpoint: LakeFSEndpoint, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny pre-trained checkpoint, the sample SFT set on lakeFS, and a LoRA fine-tune of it (merged too)."""
    work = tmp_path_factory.mktemp("finetune")
    publish_tokenized(lakefs_endpoint, REPO_NAME, work / "tokenized")
    pretrained = cli(lakefs_endpoint, "tasks.training.pretrain", "run", "--repo", REPO_NAME, "--steps", "6",
                     "--checkpoint-interval", "6", "--eval-interval", "6", "--cache-dir", str(work / "cache"),
                     "--checkpoint-dir", str(work / "pretrain"))
    assert pretrained.returncode == 0, pretrained.stdout[-2000:] + pretrained.stderr[-2000:]
    assert cli(lakefs_endpoint, "tasks.training.sft", "sample", "--out", str(work / "sft"), "--count",
               "120").returncode == 0
    versioned = VersionedRepo(lakefs_endpoint, REPO_NAME)
    versioned.put_object("main", "sft/sample.jsonl", (work / "sft" / "sample.jsonl").read_bytes())
    versioned.commit("main", "sample SFT set", Lineage("tests", "finetune", "land_sft"))
    tuned = cli(lakefs_endpoint, "tasks.training.finetune", "run", "--base", str(work / "pretrain"), "--repo",
                REPO_NAME, "--steps", "6", "--lr", "5e-3", "--checkpoint-interval", "6", "--eval-interval", "6",
                "--lora-rank", "4", "--merge-after", "--checkpoint-dir", str(work / "lora"))
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    result = json.loads(tuned.stdout.split("finetune result ", 1)[1].splitlines()[0])
    return {"work": work, "result": result, "stdout": tuned.stdout, "exports": work / "lora" / "exports"}


def tokens() -> torch.Tensor:
    return torch.randint(5, 1500, (2, 24), generator=torch.Generator().manual_seed(9))


def hf_logits(path: Path, adapter: Path | None = None) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(tokens()).logits


def megatron_lora_logits(base: Path, lora_checkpoint: Path, rank: int) -> torch.Tensor:
    """Our model: the base checkpoint's weights plus the adapters of the fine-tuning checkpoint."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    from tasks.training import distributed
    from tasks.training.config import ModelConfig, ParallelConfig
    from tasks.training.export import resolve_checkpoint
    from tasks.training.finetune import load_base_weights
    from tasks.training.lora import LoRAConfig, adapter_state, apply_lora, load_adapter_state
    from tasks.training.model import build_gpt

    base = resolve_checkpoint(base)
    model_cfg = ModelConfig(**json.loads((base / "manifest.json").read_text())["config"]["model"])
    distributed.init(ParallelConfig(), seed=0)
    try:
        model = build_gpt(model_cfg, ParallelConfig())
        load_base_weights(model, base)
        apply_lora(model, LoRAConfig(rank=rank), seed=0)
        wanted = ShardedObject("adapters", adapter_state(model), (1, 1), (0, 0), replica_id=0)
        loaded = dist_checkpointing.load({"model": wanted}, str(resolve_checkpoint(lora_checkpoint)))
        load_adapter_state(model, loaded["model"])
        positions = torch.arange(24).expand(2, 24)
        with torch.no_grad():
            return model(tokens(), positions, None)
    finally:
        distributed.shutdown()


def test_peft_loads_the_adapter_and_computes_what_megatron_computes(trained):
    exports = trained["exports"]
    config = json.loads((exports / "adapter-peft" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    ours = megatron_lora_logits(trained["work"] / "pretrain", trained["work"] / "lora", rank=4)
    base = hf_logits(exports / "base-hf")
    adapted = hf_logits(exports / "base-hf", exports / "adapter-peft")
    assert (adapted - base).abs().max() > 1e-3, "the trained adapter must change the output"
    assert (adapted - ours).abs().max() < 1e-4
    merged = hf_logits(exports / "merged-hf")
    assert (merged - adapted).abs().max() < 1e-4


def test_the_adapter_is_small_and_the_run_reports_before_and_after(trained):
    exports = trained["exports"]
    adapter_bytes = (exports / "adapter-peft" / "adapter_model.safetensors").stat().st_size
    base_bytes = (exports / "base-hf" / "model.safetensors").stat().st_size
    assert adapter_bytes < base_bytes / 20
    result = trained["result"]
    assert result["step"] == 6 and result["valid_loss_after"] < result["valid_loss_before"]
    assert "parameters trainable" in trained["stdout"]


def test_the_loss_mask_covers_the_response_and_its_end_of_text_only(trained):
    from tokenizers import Tokenizer

    from tasks.training.sft import PROMPT_TEMPLATE, Example, SFTDataset

    tokenizer_file = next(trained["work"].glob("lora/data-cache/**/tokenizer/tokenizer.json"))
    example = Example("x", "What does `json.dumps` do?", "Serialize obj to a JSON formatted str.")
    sample = SFTDataset([example], tokenizer_file, 64)[0]
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    prompt = tokenizer.encode(PROMPT_TEMPLATE.format(prompt=example.prompt), add_special_tokens=False).ids
    response = tokenizer.encode(example.response, add_special_tokens=False).ids
    eos = tokenizer.token_to_id("<|endoftext|>")
    mask = sample["loss_mask"].tolist()
    first = len(prompt) - 1  # label position of the first response token
    assert mask[:first] == [0.0] * first
    assert mask[first:first + len(response) + 1] == [1.0] * (len(response) + 1)
    assert sum(mask) == len(response) + 1, "padding carries no loss"
    labels = sample["labels"].tolist()
    assert labels[first:first + len(response) + 1] == [*response, eos]


@pytest.mark.parametrize(("flags", "message"), [
    (["--method", "qlora"], "error: method: 'qlora' is not one of lora, full"),
    (["--lora-rank", "0"], "error: lora_rank: must be >= 1"),
    (["--lora-targets", "linear_qkv,q_proj"], "error: lora_targets: ['q_proj'] not among"),
    (["--tensor-parallel", "3"], "error: tensor_parallel: 4 attention heads"),
])
def test_bad_settings_are_refused_before_training(lakefs_endpoint, trained, flags, message):
    refused = cli(lakefs_endpoint, "tasks.training.finetune", "validate", "--base", str(trained["work"] / "pretrain"),
                  "--repo", REPO_NAME, "--checkpoint-dir", str(trained["work"] / "unused"), *flags)
    assert refused.returncode == 2 and message in refused.stdout, refused.stdout + refused.stderr[-2000:]


def test_an_unknown_base_and_sft_data_failing_its_gate_are_refused(lakefs_endpoint, trained, tmp_path):
    unknown = cli(lakefs_endpoint, "tasks.training.finetune", "validate", "--base", str(tmp_path / "nothing"),
                  "--repo", REPO_NAME, "--checkpoint-dir", str(tmp_path / "ck"))
    assert unknown.returncode == 2 and "error: base: " in unknown.stdout
    versioned = VersionedRepo(lakefs_endpoint, REPO_NAME)
    versioned.create_branch("too-few", "main")
    few = "".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "response": f"Answer {i}."}) + "\n"
                  for i in range(5))
    versioned.put_object("too-few", "sft/sample.jsonl", few.encode())
    commit = versioned.commit("too-few", "too few SFT rows", Lineage("tests", "finetune", "few"))
    failed = cli(lakefs_endpoint, "tasks.training.finetune", "validate", "--base", str(trained["work"] / "pretrain"),
                 "--repo", REPO_NAME, "--sft-commit", commit, "--checkpoint-dir", str(tmp_path / "ck"))
    assert failed.returncode == 2 and "error: sft_data: the SFT gate failed" in failed.stdout, failed.stdout
