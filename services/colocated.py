"""Drafters co-located in the verifier's replica: each session's draft state next to its target KV cache.

A remote drafter costs a round trip per step on top of the verifier's, and the target features it drafts from
travel to it. A co-located drafter runs where those features are computed: after verifying a step, the replica
appends the step's pairs to the session's drafters and drafts the trees the caller asked for (`draft_next`), so
they come back with the Verify response (one round trip per step). Its heads borrow the verifier's loaded target
(embedding and LM head); each head has a KV cache with one slot per verifier session.

A session's drafters are created on first use, from the features of the session's committed tokens: the prefill's
when they are still current, else recomputed by one target forward (after a rebuild or for a drafter first asked
mid-request). Drafting runs under the verifier's forward lock, batched across the sessions of one verify batch.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch

from taps_engine.drafter import Drafter, propose_batch
from taps_engine.slots import SlotCache
from taps_engine.target import Target
from taps_engine.tree import DraftTree, TreeSettings
from taps_engine.verifier import TargetVerifier

from .drafter_server import served_head


class DraftingSession(Protocol):
    ids: list[int]                       # committed tokens (the target's cache); the root is pending
    drafters: dict[str, Drafter]
    prefill_features: torch.Tensor | None  # features of `ids` while they are the prefill's, else None


class ColocatedDrafters:
    """The replica's co-located heads (name -> head directory, None = a random head) and their KV caches."""

    def __init__(self, target: Target, heads: dict[str, str | None], max_sessions: int) -> None:
        self.target = target
        self.heads = {name: served_head(name, path, target.model) for name, path in heads.items()}
        self.caches = {name: SlotCache(num_layers=1, max_slots=max_sessions) for name in self.heads}

    def check(self, names: Sequence[str]) -> None:
        unknown = sorted(set(names) - set(self.heads))
        if unknown:
            raise ValueError(f"drafters {unknown} are not co-located with this verifier (it hosts "
                             f"{sorted(self.heads) or 'none'})")

    def drafter(self, session: DraftingSession, name: str, root: int) -> Drafter:
        """The session's drafter `name`, created from the session's history when it has none yet."""
        if name not in session.drafters:
            features = session.prefill_features
            if features is None or features.shape[0] != len(session.ids):
                features = TargetVerifier(self.target).prefill(session.ids)[0]
            drafter = Drafter(name, self.heads[name], self.target, self.caches[name])
            drafter.extend(session.ids[1:] + [root], features)
            session.drafters[name] = drafter
        return session.drafters[name]

    @staticmethod
    def extend(session: DraftingSession, tokens: list[int], features: torch.Tensor) -> None:
        """A verified step's pairs (accepted tokens and the bonus, the root's and accepted rows' features)."""
        session.prefill_features = None
        for drafter in session.drafters.values():
            drafter.extend(tokens, features)

    def draft(self, asks: Sequence[tuple[DraftingSession, int, str, TreeSettings]]) -> list[DraftTree]:
        """The tree of each (session, root, drafter, settings), one head forward per tree level for every ask of
        one head."""
        drafters = [self.drafter(session, name, root) for session, root, name, _ in asks]
        trees: list[DraftTree | None] = [None] * len(asks)
        for name in {name for _, _, name, _ in asks}:
            mine = [i for i, ask in enumerate(asks) if ask[2] == name]
            for i, tree in zip(mine, propose_batch([drafters[i] for i in mine], [asks[i][3] for i in mine])):
                trees[i] = tree
        return trees

    @staticmethod
    def release(session: DraftingSession) -> None:
        for drafter in session.drafters.values():
            drafter.release()
        session.drafters.clear()
