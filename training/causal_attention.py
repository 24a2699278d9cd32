"""Causal self-attention over whole sequences from position 0, for the target's bf16 feature forwards on a CPU.

On a CPU without AMX, sdpa's flash kernel ran at about 50 GFLOP/s on these shapes (head dim 64, a few hundred
tokens per sequence) and took 23% of a feature forward (a scratch profile, round 13). This computes what
transformers' eager attention computes (products in the model's dtype, softmax in fp32) with batched matmuls: one
per kv head, its query heads stacked, so keys are never repeated; and query rows in chunks whose keys stop at the
chunk's last row, so most of the blocks above the diagonal are never computed
(results/training/feature-forward.md measures it against sdpa and eager).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "taps-causal-chunks"
CHUNK_ROWS = 64


def causal_chunked_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float, **kwargs: object
                             ) -> tuple[torch.Tensor, None]:
    """Plain causal attention when the model built no mask (sdpa's mask function returns none for causal
    attention without padding or windows); anything a mask expresses, and training forwards (dropout), go to
    sdpa."""
    batch, heads, length, dim = query.shape
    if attention_mask is not None or key.shape[2] != length or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    kv_heads = key.shape[1]
    group = heads // kv_heads  # query head h reads kv head h // group, as transformers' repeat_kv lays them out
    q = query.reshape(batch * kv_heads, group, length, dim)
    k = key.reshape(batch * kv_heads, length, dim)
    v = value.reshape(batch * kv_heads, length, dim)
    chunks = []
    for start in range(0, length, CHUNK_ROWS):
        end = min(start + CHUNK_ROWS, length)
        rows = q[:, :, start:end].reshape(batch * kv_heads, group * (end - start), dim)
        above = torch.full((end - start, end), float("-inf"), dtype=query.dtype, device=query.device)
        above = above.triu(start + 1).repeat(group, 1)
        scores = torch.baddbmm(above, rows, k[:, :end].transpose(1, 2), alpha=scaling)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        chunks.append(torch.bmm(probs, v[:, :end]).view(batch, kv_heads, group, end - start, dim))
    out = torch.cat(chunks, dim=3).reshape(batch, heads, length, dim)
    return out.transpose(1, 2), None


AttentionInterface.register(NAME, causal_chunked_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


@contextmanager
def chunked_causal(model: PreTrainedModel) -> Iterator[None]:
    """The model's sdpa layers run `causal_chunked_attention` inside the block; eager models (softcapping) keep
    theirs, which this does not express."""
    before = model.config._attn_implementation
    if before != "sdpa":
        yield
        return
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
