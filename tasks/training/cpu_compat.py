"""Let megatron-core run on a machine without CUDA (the embedded stack's CPU training, gloo).

megatron-core assumes a GPU in a few places that matter for training a GPT: it moves small tensors to
`torch.cuda.current_device()` or calls `.cuda()`, and seeds its model-parallel RNG tracker from CUDA generators.
On CPU those become no-ops / CPU generators. Applied once, and only when CUDA is absent, so GPU runs are untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_applied = False


def needed() -> bool:
    return not torch.cuda.is_available()


def apply() -> bool:
    """Patch megatron-core's CUDA assumptions for CPU; a no-op with CUDA or when already applied. True if patched."""
    global _applied
    if _applied or not needed():
        return _applied
    from megatron.core.tensor_parallel import random as tp_random

    torch.cuda.current_device = lambda: "cpu"  # tensor.to(device=current_device()) stays on CPU
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # .cuda() on a CPU-only build is a no-op
    torch.cuda.synchronize = lambda *args, **kwargs: None  # dist_checkpointing syncs before writing shards
    tp_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    tp_random._set_cuda_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)
    tp_random.CudaRNGStatesTracker.fork = _cpu_fork
    _applied = True
    return True


@contextlib.contextmanager
def _cpu_fork(self, name: str = "model-parallel-rng") -> Iterator[None]:
    """The tracker's fork on the CPU generator: swap the named state in, run the block, keep its advance."""
    if name not in self.states_:
        raise RuntimeError(f"random state {name} is not added to the model-parallel RNG tracker")
    outside = torch.get_rng_state()
    torch.set_rng_state(self.states_[name])
    try:
        yield
    finally:
        self.states_[name] = torch.get_rng_state()
        torch.set_rng_state(outside)
