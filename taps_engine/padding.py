"""Which sequences share a forward when each forward pads its rows to the longest."""

from __future__ import annotations

from typing import Sequence

PADDED_TOKENS = 4096  # per batched forward (prefill, feature caching): efficient matmuls, bounded memory


def budget_groups(lengths: Sequence[int], padded_tokens: int) -> list[list[int]]:
    """Indices in order of length, cut into groups whose padded size (rows x longest) stays within
    `padded_tokens` (a longer sequence gets a group of its own): similar lengths share a forward, so little is
    spent on padding, and each forward is big enough for efficient matmuls."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:  # sorted, so the sequence joining a group is its longest
        if groups and lengths[i] * (len(groups[-1]) + 1) <= padded_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
