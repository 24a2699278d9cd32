"""A pre-allocated KV cache of many sequences ("slots") that one target forward extends together.

Each layer holds keys and values as (slots, kv_heads, capacity, head_dim). A forward over a batch of slots writes
each row's new entries at that slot's committed length and attends over the first `longest + queries` positions
of the batch's slots: a view when the slots are consecutive (sessions take the lowest free slot, so a full batch
is one), a gather of those rows otherwise. Committing a tree's accepted rows moves only those rows, in place, and
nothing is concatenated per step, so a step costs its tree, not its context. Capacity and slot count double when
exceeded (a one-off copy). Windows and tree structure live in the masks (attention.py), so every position stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import Cache, PretrainedConfig
from transformers.cache_utils import CacheLayerMixin

_ROUND = 64  # capacity grows in multiples of this many positions


@dataclass
class _Batch:
    """The slots of the forward in progress and where each row's new entries go."""

    slots: list[int]
    starts: list[int]        # where each row's new entries go: its slot's committed length
    keys_length: int         # positions the attention reads: the longest slot plus the queries
    gather: torch.Tensor | None  # the slots to gather when they are not consecutive (else a view will do)
    writes: tuple[torch.Tensor, torch.Tensor]  # (slot, position) of each row's new entries, (B, Q) each

    def write(self, store: torch.Tensor, states: torch.Tensor) -> None:
        """Every row's new entries in one indexed copy: a copy per row cost a Python round trip per row and
        layer, 3,840 of them in a 64-row decoding step of a 30-layer target."""
        if self.writes[0].device != store.device:  # moved once per forward, not once per layer
            self.writes = tuple(index.to(store.device) for index in self.writes)
        slots, positions = self.writes
        store[slots, :, positions] = states.transpose(1, 2)  # indices apart: their (B, Q) dims come first

    def take(self, store: torch.Tensor) -> torch.Tensor:
        if self.gather is None:
            return store[self.slots[0]:self.slots[0] + len(self.slots), :, :self.keys_length]
        return store[:, :, :self.keys_length].index_select(0, self.gather.to(store.device))


class SlotLayer(CacheLayerMixin):
    """One decoder layer's share of a `SlotCache`."""

    is_sliding = False

    def __init__(self, owner: SlotCache) -> None:
        super().__init__()
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.keys = key_states.new_zeros(0, key_states.shape[1], 0, key_states.shape[-1])
        self.values = value_states.new_zeros(0, value_states.shape[1], 0, value_states.shape[-1])
        self.is_initialized = True

    def _fit(self) -> None:
        slots, capacity = self.owner.slots, self.owner.capacity
        if self.keys.shape[0] >= slots and self.keys.shape[2] >= capacity:
            return
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = old.new_zeros(slots, old.shape[1], capacity, old.shape[3])
            new[:old.shape[0], :, :old.shape[2]] = old
            setattr(self, name, new)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._fit()
        batch = self.owner.batch
        batch.write(self.keys, key_states)
        batch.write(self.values, value_states)
        return batch.take(self.keys), batch.take(self.values)

    def keep(self, slot: int, base: int, rows: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        rows = rows.to(self.device)
        n = rows.numel()
        self.keys[slot, :, base:base + n] = self.keys[slot, :, base + rows]
        self.values[slot, :, base:base + n] = self.values[slot, :, base + rows]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.batch.keys_length, 0

    def get_seq_length(self) -> int:
        batch = self.owner.batch
        return 0 if batch is None else max(self.owner.lengths[s] for s in batch.slots)

    def get_max_length(self) -> int:
        return self.owner.capacity


class SlotCache(Cache):
    """KV entries of up to `slots` sequences; `prepare` names the slots of the next forward, `keep` commits.

    Not thread-safe: one forward at a time (services/batching.py serializes the verifier replica's forwards).
    """

    def __init__(self, num_layers: int, slots: int = 1, max_slots: int | None = None, capacity: int = 0) -> None:
        """`capacity`: positions per slot to allocate at the first forward, when the caller knows the most it will
        need; each growth zero-fills a new store (64 slots of 1,000 positions: 1.6 GB for SmolLM2-135M), which
        took 40% of a batched prefill's time growing from empty (scratch profile, round 13)."""
        super().__init__(layers=[SlotLayer(self) for _ in range(num_layers)])
        self.slots = slots
        self.max_slots = max_slots
        self.capacity = -(-capacity // _ROUND) * _ROUND
        self.lengths = [0] * slots
        self._free = list(range(slots))
        self.batch: _Batch | None = None

    @classmethod
    def for_model(cls, config: PretrainedConfig, slots: int = 1, max_slots: int | None = None,
                  capacity: int = 0) -> SlotCache:
        return cls(config.get_text_config().num_hidden_layers, slots, max_slots, capacity)

    def allocate(self) -> int:
        """The lowest free slot, emptied; the slot count doubles (up to `max_slots`) when none is free."""
        if not self._free:
            grown = 2 * self.slots if self.max_slots is None else min(2 * self.slots, self.max_slots)
            if grown == self.slots:
                raise RuntimeError(f"all {self.slots} KV-cache slots are in use")
            self._free = list(range(self.slots, grown))
            self.lengths += [0] * (grown - self.slots)
            self.slots = grown
        slot = min(self._free)
        self._free.remove(slot)
        self.truncate(slot, 0)
        return slot

    def release(self, slot: int) -> None:
        if slot not in self._free:
            self._free.append(slot)
        self.truncate(slot, 0)

    def truncate(self, slot: int, length: int) -> None:
        """Keep only the first `length` committed entries of `slot` (the rest are overwritten by later forwards)."""
        self.lengths[slot] = length

    def prepare(self, slots: Sequence[int], queries: int) -> None:
        """The next forward extends `slots` (one batch row each, in order) by `queries` entries each."""
        starts = [self.lengths[s] for s in slots]
        need = max(starts) + queries
        if need > self.capacity:
            self.capacity = -(-max(need, 2 * self.capacity) // _ROUND) * _ROUND
        slots = list(slots)
        consecutive = slots == list(range(slots[0], slots[0] + len(slots)))
        index = torch.tensor(slots)
        writes = (index[:, None].expand(-1, queries), torch.tensor(starts)[:, None] + torch.arange(queries))
        self.batch = _Batch(slots, starts, need, None if consecutive else index, writes)

    def keep(self, slot: int, rows: Sequence[int]) -> None:
        """Commit the entries `rows` (offsets into what the last forward wrote for `slot`) after its committed ones."""
        base = self.lengths[slot]
        rows = torch.as_tensor(list(rows), dtype=torch.long)
        if not torch.equal(rows, torch.arange(rows.numel())):
            for layer in self.layers:
                layer.keep(slot, base, rows)
        self.lengths[slot] = base + rows.numel()
