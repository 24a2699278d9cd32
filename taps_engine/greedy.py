"""Plain greedy decoding of many prompts at once: every running prompt's next token from one target forward.

A one-token forward reads all the target's weights for one row, so a row more costs far less than a forward more
(16 prompts: 4.7x faster than one at a time, results/engine/replay_lanes.md); the prompts are prefilled several
per forward too. Each step is the engine's plain loop (`step_batch` over an empty tree) on one shared SlotCache:
nothing is padded or concatenated per step, and a prompt that stops leaves the forwards. With fewer `lanes` than
prompts, the rest wait and take the slots that stopping prompts free (continuous batching, as serving engines
do), so the forwards stay full instead of running down to the one longest reply of a fixed batch. Replay's
references and self-distillation's answers both come from here.
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

REFILL_FRACTION = 8  # waiting prompts are admitted once a lane in this many is free: a prefill forward per few lanes


@torch.no_grad()
def greedy_batch(target: Target, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                 stop_ids: Collection[int] = (), prefill_tokens: int = PADDED_TOKENS,
                 lanes: int | None = None) -> list[list[int]]:
    """Each prompt's greedy continuation: its `max_new_tokens` (one budget for all, or one per prompt) tokens, or
    fewer ending with the first of `stop_ids`. `prefill_tokens` bounds a prefill forward's padded size (1: one
    prompt per forward); `lanes` bounds the prompts decoded at once (default: all)."""
    budgets = _budgets(prompts, max_new_tokens)
    if max(budgets, default=0) < 1:
        return [[] for _ in prompts]
    return _decode(target, prompts, budgets, stop_ids, prefill_tokens, lanes, keep_features=False)[0]


@torch.no_grad()
def greedy_batch_features(target: Target, prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                          stop_ids: Collection[int] = (), lanes: int | None = None
                          ) -> tuple[list[list[int]], list[torch.Tensor]]:
    """`greedy_batch`, and the target's final hidden states along each prompt and continuation, (prompt +
    continuation, H): those of the forwards that decoded it, plus one more step reading the continuation's last
    token. Self-distillation keeps them, so its replies' features need no second pass (training/features.py)."""
    budgets = _budgets(prompts, max_new_tokens)
    if min(budgets, default=1) < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {min(budgets)}")
    return _decode(target, prompts, budgets, stop_ids, PADDED_TOKENS, lanes, keep_features=True)


def _budgets(prompts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int]) -> list[int]:
    if isinstance(max_new_tokens, int):
        return [max_new_tokens] * len(prompts)
    if len(max_new_tokens) != len(prompts):
        raise ValueError(f"{len(max_new_tokens)} token budgets for {len(prompts)} prompts")
    if min(max_new_tokens, default=1) < 1:
        raise ValueError(f"each prompt's max_new_tokens must be >= 1, got {min(max_new_tokens)}")
    return list(max_new_tokens)


def _decode(target: Target, prompts: Sequence[Sequence[int]], budgets: list[int], stop_ids: Collection[int],
            prefill_tokens: int, lanes: int | None, keep_features: bool
            ) -> tuple[list[list[int]], list[torch.Tensor]]:
    lanes = max(1, min(lanes or len(prompts), len(prompts)))
    cache = SlotCache.for_model(target.model.config, lanes, max_slots=lanes, capacity=max(
        (len(p) + b for p, b in zip(prompts, budgets)), default=0) + keep_features)
    out: list[list[int]] = [[] for _ in prompts]
    features: list[list[torch.Tensor]] = [[] for _ in prompts]
    running: dict[int, TargetVerifier] = {}
    waiting = list(range(len(prompts)))[::-1]   # popped from the end: in the given order
    read_last: set[int] = set()
    greedy, unused = SamplingParams(), torch.Generator()

    def stopped(i: int) -> bool:
        return len(out[i]) >= budgets[i] or out[i][-1] in stop_ids

    def admit(n: int) -> None:
        new = [waiting.pop() for _ in range(min(n, len(waiting)))]
        verifiers = [TargetVerifier(target, cache) for _ in new]
        for i, verifier, (read, logits) in zip(new, verifiers, prefill_batch(verifiers, [prompts[i] for i in new],
                                                                              prefill_tokens)):
            out[i].append(int(logits.argmax()))
            features[i] += [read] if keep_features else []
            running[i] = verifier

    while True:
        for i in [i for i in running if stopped(i) and (not keep_features or i in read_last)]:
            running.pop(i).release()
        free = lanes - len(running)
        if waiting and free and (free * REFILL_FRACTION >= lanes or not running):
            admit(free)
        if not running:
            break
        rows = sorted(running, key=lambda i: running[i].slot)   # all lanes busy: consecutive slots, no gather
        closing = [i for i in rows if stopped(i)]   # stepping only to read their last token
        steps = step_batch([running[i] for i in rows], [out[i][-1] for i in rows], [DraftTree.empty()] * len(rows),
                           [greedy] * len(rows), [unused] * len(rows))
        for i, (_, bonus, read) in zip(rows, steps):
            out[i].append(bonus)
            features[i] += [read] if keep_features else []
        for i in closing:
            out[i].pop()   # the token read for its features is not part of the continuation
            read_last.add(i)
    return out, [torch.cat(f) for f in features] if keep_features else []
