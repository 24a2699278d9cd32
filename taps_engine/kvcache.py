"""KV-cache surgery on transformers' `DynamicCache`: keep a subset of positions (tree compaction, cropping)."""

from __future__ import annotations

import torch
from transformers import Cache


def keep_positions(cache: Cache, keep: torch.Tensor) -> None:
    """Keep only sequence positions `keep` (ascending) in every layer, in place."""
    for layer in cache.layers:
        if not layer.is_initialized or layer.keys.numel() == 0:
            continue
        if keep.numel() == layer.keys.shape[-2] and bool((keep == torch.arange(keep.numel(), device=keep.device)).all()):
            continue
        idx = keep.to(layer.keys.device)
        layer.keys = layer.keys.index_select(-2, idx)
        layer.values = layer.values.index_select(-2, idx)
