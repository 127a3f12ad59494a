"""Process groups for one training process: NCCL on GPUs, gloo on CPU, megatron-core's TP/PP/DP groups on top."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from tasks.training import cpu_compat
from tasks.training.config import ParallelConfig


@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    tp_rank: int
    dp_rank: int
    dp_group: object
    tp_group: object

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(parallel: ParallelConfig, seed: int) -> Runtime:
    """Join (or, alone, create) the process group torchrun set up, then build megatron-core's parallel groups."""
    from megatron.core import parallel_state

    cpu_compat.apply()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    parallel.check_world(world)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if cuda else "gloo"
        if world == 1 and "MASTER_ADDR" not in os.environ:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor_parallel, pipeline_model_parallel_size=parallel.pipeline_parallel
    )
    torch.manual_seed(seed)
    if cuda:
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(seed)
    return Runtime(
        rank=rank, world_size=world,
        device=torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu"),
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        dp_group=parallel_state.get_data_parallel_group(),
        tp_group=parallel_state.get_tensor_model_parallel_group(),
    )


def shutdown() -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over(value: float, group: object, size: int) -> float:
    if size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(tensor, group=group)
    return float(tensor.item()) / size
