"""The request/response tensors of TensorRT-LLM's LLM API model on Triton, defined once.

Both targets render their `config.pbtxt` from this list: the production `tensorrt_llm` model and the embedded
python-backend model. A client written against one works against the other unchanged.

Source: `triton_backend/all_models/llmapi/tensorrt_llm/config.pbtxt` in NVIDIA/TensorRT-LLM (the pinned version
and commits are recorded in include/serving/trtllm_llm_args.yaml). This is a subset of upstream's inputs; every
output upstream's model.py may send for an input listed here is listed too, so no response carries an undeclared one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str  # Triton's model_config DataType name
    dims: tuple[int, ...] = (1,)
    optional: bool = True  # inputs only: Triton's ModelOutput has no such field


INPUTS: tuple[Tensor, ...] = (
    Tensor("text_input", "TYPE_STRING", dims=(-1,), optional=False),
    Tensor("streaming", "TYPE_BOOL"),
    Tensor("sampling_param_max_tokens", "TYPE_INT32"),
    Tensor("sampling_param_temperature", "TYPE_FP32"),
    Tensor("sampling_param_top_k", "TYPE_INT32"),
    Tensor("sampling_param_top_p", "TYPE_FP32"),
    Tensor("sampling_param_seed", "TYPE_UINT64"),
    Tensor("sampling_param_stop", "TYPE_STRING", dims=(-1,)),
    Tensor("sampling_param_exclude_input_from_output", "TYPE_BOOL"),
    Tensor("sampling_param_return_perf_metrics", "TYPE_BOOL"),
    Tensor("return_finish_reason", "TYPE_BOOL"),
    # Upstream sends all three together (plus the optional source, "hf" or "nemo"). They arrived after the
    # pinned release (NVIDIA/TensorRT-LLM PR #14079); older model.py ignores them, which build checks for.
    Tensor("lora_name", "TYPE_STRING"),
    Tensor("lora_id", "TYPE_UINT64"),
    Tensor("lora_path", "TYPE_STRING"),
    Tensor("lora_ckpt_source", "TYPE_STRING"),
)

OUTPUTS: tuple[Tensor, ...] = (
    Tensor("text_output", "TYPE_STRING", dims=(-1,), optional=False),
    Tensor("finish_reason", "TYPE_STRING", dims=(-1,)),
    # Sent only when sampling_param_return_perf_metrics is true, all of them at once.
    Tensor("arrival_time_ns", "TYPE_INT64"),
    Tensor("first_scheduled_time_ns", "TYPE_INT64"),
    Tensor("first_token_time_ns", "TYPE_INT64"),
    Tensor("last_token_time_ns", "TYPE_INT64"),
    Tensor("kv_cache_reused_block", "TYPE_INT32", dims=(-1,)),
    Tensor("kv_cache_missed_block", "TYPE_INT32", dims=(-1,)),
    Tensor("kv_cache_alloc_new_blocks", "TYPE_INT32", dims=(-1,)),
    Tensor("kv_cache_alloc_total_blocks", "TYPE_INT32", dims=(-1,)),
    Tensor("kv_cache_hit_rate", "TYPE_FP32", dims=(-1,)),
    Tensor("acceptance_rate", "TYPE_FP32"),
    Tensor("total_accepted_draft_tokens", "TYPE_INT32"),
    Tensor("total_draft_tokens", "TYPE_INT32"),
)

INPUT_NAMES = frozenset(t.name for t in INPUTS)
OUTPUT_NAMES = frozenset(t.name for t in OUTPUTS)
