"""The Llama-style GPT as a megatron-core GPTModel, with PyTorch's SDPA as core attention.

megatron-core's local spec computes attention with explicit matmuls and a softmax (fused only with Apex /
TransformerEngine, which we do not require); swapping in `scaled_dot_product_attention` through the ModuleSpec
gives flash attention on GPUs and a fused kernel on CPU, with the rest of megatron-core unchanged.

On GPUs `build_gpt(..., compile=True)` compiles each transformer layer with torch.compile (one graph per layer,
no breaks: RMSNorm, RoPE and SwiGLU fuse around the matmuls, which is what TE/Apex fusions would otherwise give),
and at TP=1 the loss is one compiled cross entropy over the bf16 logits instead of megatron's multi-pass fp32 one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.gpt_model import GPTModel
from megatron.core.tensor_parallel import RowParallelLinear
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from tasks.training.config import ModelConfig, ParallelConfig

INIT_STD = 0.02


class SDPAttention(MegatronModule):
    """Causal attention over this rank's heads: [s, b, heads, head_dim] in, [s, b, heads * head_dim] out."""

    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None, **_: object) -> None:
        super().__init__(config=config)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention takes neither packed sequences nor an attention bias")
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # -> [b, heads, s, head_dim]
        groups = q.size(1) // k.size(1)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0,
            scale=self.softmax_scale, enable_gqa=groups > 1,
        )
        s, b = out.size(2), out.size(0)
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)


class GroupedRowParallelLinear(RowParallelLinear):
    """RowParallelLinear that names its TP group when it calls the matmul.

    megatron-core 0.16 passes tp_group=None there and warns about it, and that warning is a torch.compile graph
    break at every linear_proj and linear_fc2; the group passed is the one it would fall back to.
    """

    def _forward_impl(self, input, weight, *args, **kwargs):
        return super()._forward_impl(input, weight, *args, **{**kwargs, "tp_group": self.tp_group})


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[s, b, vocab] logits and [b, s] labels -> [b, s] fp32 losses, computed in fp32."""
    s, b, vocab = logits.shape
    loss = F.cross_entropy(logits.float().view(-1, vocab), labels.t().reshape(-1), reduction="none")
    return loss.view(s, b).t()


# compiled, the fp32 upcast stays in registers: one pass over the logits forward and one backward
_compiled_cross_entropy = torch.compile(token_cross_entropy, dynamic=False)


class LlamaGPT(GPTModel):
    """GPTModel whose TP=1 loss is a plain cross entropy (compiled on GPU); TP>1 keeps megatron's vocab-parallel one."""

    def compute_language_model_loss(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        if self.config.tensor_model_parallel_size > 1:
            return super().compute_language_model_loss(labels, logits)
        return (_compiled_cross_entropy if logits.is_cuda else token_cross_entropy)(logits, labels)


def transformer_config(model: ModelConfig, parallel: ParallelConfig, dtype: torch.dtype) -> TransformerConfig:
    """Llama-style block settings; weights are initialised on CPU from one seed, so TP=1 and TP=2 start equal."""
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        ffn_hidden_size=model.ffn_hidden_size,
        normalization="RMSNorm",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=INIT_STD,
        tensor_model_parallel_size=parallel.tensor_parallel,
        pipeline_model_parallel_size=parallel.pipeline_parallel,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        use_cpu_initialization=True,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
    )


def layer_spec() -> ModuleSpec:
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPAttention
    spec.submodules.self_attention.submodules.linear_proj = GroupedRowParallelLinear
    spec.submodules.mlp.submodules.linear_fc2 = GroupedRowParallelLinear
    return spec


def build_gpt(model: ModelConfig, parallel: ParallelConfig, dtype: torch.dtype = torch.float32,
              compile: bool = False) -> GPTModel:
    """This rank's shard of the GPT (parallel state must be initialised), on CPU; the caller moves it.

    compile=True (meant for GPUs) compiles each transformer layer in place on its first call: module identity and
    state-dict keys stay the same, so DDP, checkpoints and the trainer see the same model.
    """
    gpt = LlamaGPT(
        config=transformer_config(model, parallel, dtype),
        transformer_layer_spec=layer_spec(),
        vocab_size=model.vocab_size,
        max_sequence_length=model.seq_length,
        position_embedding_type="rope",
        rotary_base=model.rotary_base,
        share_embeddings_and_output_weights=False,
    )
    if compile:
        for layer in gpt.decoder.layers:
            layer.compile()
    return gpt


def clip_grad_norm_foreach(model: torch.nn.Module, max_norm: float, tp_group: object | None) -> torch.Tensor:
    """The trainer's global grad norm (TP duplicates counted once) and clipping, without a host sync.

    One foreach norm over all grads replaces an fp32 copy plus two kernels per parameter, and the clip factor stays
    on the device (a multiply by 1 when under max_norm), so the step is queued without waiting for the norm: 4.7 ms
    of a 278 ms step of the 1b preset on an H100 (docs/benchmarks.md). Returns the norm before clipping, 0-dim.
    """
    from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    owned = [p.grad for p in model.parameters() if p.grad is not None and param_is_not_tensor_parallel_duplicate(p)]
    squares = torch.stack(torch._foreach_norm(owned, 2, dtype=torch.float32)).square().sum()
    if tp_group is not None and torch.distributed.get_world_size(tp_group) > 1:
        torch.distributed.all_reduce(squares, group=tp_group)
    norm = squares.sqrt()
    if max_norm > 0:
        torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm
