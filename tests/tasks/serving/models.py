"""Small Hugging Face models to serve in tests: a 2-layer Llama with a byte-level BPE tokenizer, and a LoRA adapter
for it whose weights are non-zero (so it changes the output, as a trained one would)."""

from __future__ import annotations

from pathlib import Path

TEXT = ["def add(a, b):\n    return a + b\n", "The quick brown fox jumps over the lazy dog.",
        "import os\nimport sys\nprint(os.getcwd())"] * 50


def tiny_llama(out: Path, seed: int = 0, positions: int = 96) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<pad>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=positions,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lora_adapter(base: Path, out: Path, seed: int = 1) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


def serve(repository_root: Path, http_url: str, name: str, checkpoint: Path, registered_version: str = "7") -> None:
    """Deploy checkpoint as the next version of `name` on a running Triton (as registered model `tiny`)."""
    from tasks.serving import python_target
    from tasks.serving.client import TritonControl
    from tasks.serving.repository import ModelRepository

    repo = ModelRepository(repository_root)
    with repo.writer():
        version = repo.add_version(name, lambda d: python_target.populate(
            d, checkpoint, adapters_index=repo.adapters_index,
            lineage={"registered_model": "tiny", "registered_version": registered_version}))
        repo.write_config(name, python_target.config(name, [version], registered_model="tiny",
                                                     registered_version=registered_version))
    control = TritonControl(http_url)
    control.load(name)
    control.wait_ready(name, version)
