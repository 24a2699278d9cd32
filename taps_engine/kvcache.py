"""KV-cache surgery on transformers' `DynamicCache`: keep a subset of positions (tree compaction, cropping)."""

from __future__ import annotations

import torch
from transformers import Cache


def keep_positions(cache: Cache, keep: torch.Tensor) -> None:
    """Keep only sequence positions `keep` (ascending) in every layer.

    Positions before the first one dropped stay where they are (the committed prefix: all but a few rows), so
    only the tail is moved and the cache becomes a view of its first `len(keep)` rows: a step's compaction costs
    the accepted path, not the context.
    """
    n = keep.numel()
    unchanged = torch.arange(n, device=keep.device) == keep
    start = n if bool(unchanged.all()) else int((~unchanged).nonzero()[0])
    for layer in cache.layers:
        if not layer.is_initialized or layer.keys.numel() == 0:
            continue
        if start < n:
            tail = keep[start:].to(layer.keys.device)
            layer.keys[..., start:n, :] = layer.keys.index_select(-2, tail)
            layer.values[..., start:n, :] = layer.values.index_select(-2, tail)
        layer.keys = layer.keys[..., :n, :]
        layer.values = layer.values[..., :n, :]
