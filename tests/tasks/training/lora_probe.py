"""Run under torchrun (or alone): a tiny GPT with LoRA, one forward/backward/step; saves full (TP-gathered) logits,
adapters and adapter gradients so the test can compare TP sizes. Usage: lora_probe.py OUT.pt"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.getcwd())

from tasks.training import distributed  # noqa: E402
from tasks.training.config import ParallelConfig, model_preset  # noqa: E402
from tasks.training.lora import LoRAConfig, adapters_of, apply_lora, gather_rows, shard_rows  # noqa: E402
from tasks.training.model import build_gpt  # noqa: E402


def gather(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    return torch.cat(all_ranks(tensor, group), dim=dim)


def all_ranks(tensor: torch.Tensor, group) -> list[torch.Tensor]:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return parts


def main(out: str) -> None:
    tp = int(os.environ.get("WORLD_SIZE", "1"))
    runtime = distributed.init(ParallelConfig(tensor_parallel=tp), seed=5)
    model_cfg = model_preset("tiny", seq_length=32)
    model = build_gpt(model_cfg, ParallelConfig(tensor_parallel=tp))
    base_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapters = apply_lora(model, LoRAConfig(rank=4, alpha=8), seed=11, tp_rank=runtime.tp_rank, tp_size=tp)
    initial = {a.name: a.lora_A.detach() if a.column else gather(a.lora_A.detach(), 1, runtime.tp_group)
               for a in adapters}
    torch.manual_seed(3)
    for adapter in adapters:  # a trained-looking B (whole matrix from one seed, then this rank's slice)
        full = torch.randn(adapter.base.output_size, adapter.lora_B.shape[1]) * 0.05
        mine = shard_rows(full, runtime.tp_rank, tp, adapter.stride) if adapter.column else full
        adapter.lora_B.data.copy_(mine)
    tokens = torch.randint(0, model_cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(32).expand(2, 32)
    local = model(tokens, positions, None)  # [b, s, vocab / tp]
    logits = gather(local.detach(), -1, runtime.tp_group)
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
    width = local.shape[-1]
    (local * weights[..., runtime.tp_rank * width:(runtime.tp_rank + 1) * width]).sum().backward()
    with_grad = sorted(n for n, p in model.named_parameters() if p.grad is not None)
    grads = {a.name: (a.lora_A.grad if a.column else gather(a.lora_A.grad, 1, runtime.tp_group),
                      gather_rows(all_ranks(a.lora_B.grad, runtime.tp_group), a.stride) if a.column else a.lora_B.grad)
             for a in adapters}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer.step()
    unchanged = all(torch.equal(p, base_before[n.replace(".base.", ".")]) for n, p in model.named_parameters()
                    if not p.requires_grad)
    if runtime.rank == 0:
        torch.save({"logits": logits, "initial_A": initial, "grads": grads, "with_grad": with_grad,
                    "base_unchanged": unchanged, "adapters": len(list(adapters_of(model)))}, out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
