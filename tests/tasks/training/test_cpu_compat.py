"""megatron-core's CUDA assumptions are patched on CPU only, once, and what they touch runs on CPU afterwards."""

from __future__ import annotations

import torch

from tasks.training import cpu_compat


def test_patches_apply_once_and_only_without_cuda():
    assert cpu_compat.needed() == (not torch.cuda.is_available())
    first = cpu_compat.apply()
    assert first == cpu_compat.needed()
    assert cpu_compat.apply() == first  # idempotent: a second call changes nothing


def test_rotary_embedding_and_rng_tracker_work_on_cpu_after_the_patches():
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.tensor_parallel.random import CudaRNGStatesTracker

    cpu_compat.apply()
    rotary = RotaryEmbedding(kv_channels=8, rotary_percent=1.0)
    assert rotary(16).device.type == "cpu" and rotary(16).shape[0] == 16

    tracker = CudaRNGStatesTracker()
    torch.manual_seed(7)
    tracker.states_["dropout"] = torch.get_rng_state()
    outside = torch.get_rng_state()
    with tracker.fork("dropout"):
        inside = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), outside), "the caller's RNG stream must not move"
    with tracker.fork("dropout"):
        assert not torch.equal(torch.rand(3), inside), "the named stream continues where it stopped"
