"""Plain greedy decoding of many prompts at once: every running prompt's next token from one target forward.

A one-token forward reads all the target's weights for one row, so a row more costs far less than a forward more
(16 prompts: 4.7x faster than one at a time, results/engine/replay_lanes.md); the prompts are prefilled several
per forward too. Each step is the engine's plain loop (`step_batch` over an empty tree) on one shared SlotCache:
nothing is padded or concatenated per step, and a prompt that stops leaves the forwards. Replay's references and
self-distillation's answers both come from here.
"""

from __future__ import annotations

from typing import Collection, Sequence

import torch

from .acceptance import SamplingParams
from .padding import PADDED_TOKENS
from .slots import SlotCache
from .target import Target
from .tree import DraftTree
from .verifier import TargetVerifier, prefill_batch, step_batch


@torch.no_grad()
def greedy_batch(target: Target, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                 stop_ids: Collection[int] = (), prefill_tokens: int = PADDED_TOKENS) -> list[list[int]]:
    """Each prompt's greedy continuation: `max_new_tokens` tokens, or fewer ending with the first of `stop_ids`.
    `prefill_tokens` bounds a prefill forward's padded size (1: one prompt per forward)."""
    if max_new_tokens < 1:
        return [[] for _ in prompts]
    return _decode(target, prompts, max_new_tokens, stop_ids, prefill_tokens, keep_features=False)[0]


@torch.no_grad()
def greedy_batch_features(target: Target, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                          stop_ids: Collection[int] = ()) -> tuple[list[list[int]], list[torch.Tensor]]:
    """`greedy_batch`, and the target's final hidden states along each prompt and continuation, (prompt +
    continuation, H): those of the forwards that decoded it, plus one more forward reading every continuation's last
    token. Self-distillation keeps them, so its replies' features need no second pass (training/features.py)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return _decode(target, prompts, max_new_tokens, stop_ids, PADDED_TOKENS, keep_features=True)


def _decode(target: Target, prompts: Sequence[Sequence[int]], max_new_tokens: int, stop_ids: Collection[int],
            prefill_tokens: int, keep_features: bool) -> tuple[list[list[int]], list[torch.Tensor]]:
    cache = SlotCache.for_model(target.model.config, max(1, len(prompts)),
                                capacity=max(map(len, prompts), default=0) + max_new_tokens + keep_features)
    verifiers = [TargetVerifier(target, cache) for _ in prompts]
    prefilled = prefill_batch(verifiers, prompts, prefill_tokens)
    out = [[int(logits.argmax())] for _, logits in prefilled]
    features = [[f] for f, _ in prefilled] if keep_features else []
    greedy, unused = SamplingParams(max_new_tokens=max_new_tokens), torch.Generator()

    def step(rows: list[int]) -> None:
        steps = step_batch([verifiers[i] for i in rows], [out[i][-1] for i in rows], [DraftTree.empty()] * len(rows),
                           [greedy] * len(rows), [unused] * len(rows))
        for i, (_, bonus, read) in zip(rows, steps):
            out[i].append(bonus)
            if keep_features:
                features[i].append(read)

    while running := [i for i, o in enumerate(out) if len(o) < max_new_tokens and o[-1] not in stop_ids]:
        step(running)
    if not keep_features:
        return out, []
    step(list(range(len(out))))   # each continuation's last token, read for its features; the token it adds is dropped
    for o in out:
        o.pop()
    return out, [torch.cat(f) for f in features]
