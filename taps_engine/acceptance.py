"""Lossless acceptance of a verified draft tree: greedy (T=0) and multi-draft speculative sampling (T>0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generator, Sequence

import torch

from .tree import DraftTree


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop_on_eos: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def target_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The target's sampling distribution: temperature, then top-k, then top-p (transformers' order)."""
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = logits.topk(params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p
        sorted_p = sorted_p.masked_fill(mass_before >= params.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token from the target's distribution (argmax at T=0): plain decoding and the first token."""
    if params.greedy:
        return int(logits.argmax(-1))
    return int(torch.multinomial(target_probs(logits.cpu(), params), 1, generator=generator))


class _Walk:
    """Descending a draft tree during acceptance, with same-token siblings taken as one node.

    A merged tree (concat) can hold the same token twice under one parent, one copy per drafter. Both copies extend
    the same context, so the target's distribution at each is the same and their KV rows are interchangeable:
    accepting the token continues below all copies, not just the first, and a concat merge never accepts less
    than the de-duplicated trie.
    """

    def __init__(self, tree: DraftTree) -> None:
        self.tokens = tree.tokens.tolist()
        self.scores = tree.scores.tolist()
        self.kids = tree.children()
        self.group = [-1]          # the current node's copies (-1: the root)

    @property
    def row(self) -> int:
        """The logits row of the current node (the root is row 0, node i row i+1)."""
        return self.group[0] + 1

    def candidates(self) -> list[tuple[int, list[int]]]:
        """(token, copies) of the current node's children, best-scored copy first, tokens by their best score."""
        children = sorted((k for g in self.group for k in self.kids[g + 1]), key=lambda k: -self.scores[k])
        by_token: dict[int, list[int]] = {}
        for k in children:
            by_token.setdefault(self.tokens[k], []).append(k)
        return list(by_token.items())

    def descend(self, copies: list[int]) -> int:
        self.group = copies
        return copies[0]


def accept_greedy(logits: torch.Tensor, tree: DraftTree) -> tuple[list[int], int]:
    """Follow the target's argmax down the tree; returns accepted node indices and the bonus token."""
    return follow_tokens(logits.argmax(-1).tolist(), tree)


def follow_continuation(continuation: Sequence[int], tree: DraftTree) -> tuple[list[int], int]:
    """`follow_tokens` when the target's tokens from the root on are known (`continuation[0]` follows the root);
    no draft matches past its end (bonus -1 there)."""
    def token(index: int) -> int:
        return continuation[index] if index < len(continuation) else -1
    return follow_tokens([token(0)] + [token(int(d)) for d in tree.depths], tree)


def follow_tokens(best: list[int], tree: DraftTree) -> tuple[list[int], int]:
    """Greedy acceptance given the target's choice after the root (`best[0]`) and after each node (`best[i + 1]`)."""
    walk, path = _Walk(tree), []
    while True:
        copies = dict(walk.candidates()).get(best[walk.row])
        if copies is None:
            return path, best[walk.row]
        path.append(walk.descend(copies))


def accept_sampling(logits: torch.Tensor, tree: DraftTree, params: SamplingParams,
                    generator: torch.Generator | None) -> tuple[list[int], int]:
    """Multi-draft speculative sampling over deterministic (top-k) drafts, given the logits of every tree row."""
    walk = acceptance_walk(tree, params, generator)
    row = next(walk)
    while True:
        try:
            row = walk.send(logits[row])
        except StopIteration as done:
            return done.value


def acceptance_walk(tree: DraftTree, params: SamplingParams, generator: torch.Generator | None
                    ) -> Generator[int, torch.Tensor, tuple[list[int], int]]:
    """Acceptance down `tree`, asking for the target's logits one row at a time: it yields the row it needs next
    (0 = root, i + 1 = node i), is sent that row's logits (V,), and returns the accepted node indices and the
    bonus token. Only the accepted path's rows are asked for, so a verifier may compute just those
    (lockstep.py's path verification) and get what verifying the whole tree gets.

    T=0 follows the target's argmax. T>0: each child is a point-mass proposal q = δ(x): accept with probability
    min(1, p(x)/q(x)) = p(x); on rejection p <- normalize(max(0, p - q)), i.e. x is removed. Whatever the tree, the
    committed token is distributed exactly as p, so the output follows the target's own sampling distribution.
    """
    walk, path = _Walk(tree), []
    while True:
        logits = yield walk.row
        if params.greedy:
            best = int(logits.argmax(-1))
            accepted = dict(walk.candidates()).get(best)
            if accepted is None:
                return path, best
            path.append(walk.descend(accepted))
            continue
        p = target_probs(logits.cpu(), params)
        accepted = None
        for x, copies in walk.candidates():
            if float(torch.rand((), generator=generator)) < float(p[x]):
                accepted = copies
                break
            p[x] = 0.0
            mass = p.sum()
            if mass <= 0:  # x held all the mass; only rounding rejected it
                accepted = copies
                break
            p /= mass
        if accepted is None:
            return path, int(torch.multinomial(p, 1, generator=generator))
        path.append(walk.descend(accepted))
