"""Composition policies: which drafter(s) draft each step and which tree the target verifies.

Verification is the same for every policy, so every policy is lossless; they differ only in acceptance length
and drafting cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor

import torch

from . import tree as trees
from .drafter import Proposer, TreeSettings
from .tree import DraftTree


class Policy(ABC):
    name: str
    needs_drafters = True

    def start(self, drafters: dict[str, Proposer], requested: str | None) -> dict:
        """Per-request setup; returns what was decided (for the result's info)."""
        if requested is not None and requested not in drafters:
            raise ValueError(f"unknown drafter {requested!r}; available: {', '.join(drafters) or 'none'}")
        return {}

    @abstractmethod
    def propose(self, drafters: dict[str, Proposer], settings: TreeSettings) -> tuple[DraftTree, list[str]]:
        """The tree to verify this step and the drafters that drafted."""


class Plain(Policy):
    """No drafts: one target token per forward (the baseline through the same loop)."""

    name = "plain"
    needs_drafters = False

    def propose(self, drafters, settings):
        return DraftTree.empty(), []


def _draft(drafters: dict[str, Proposer], name: str, settings: TreeSettings) -> DraftTree:
    """One drafter's tree, its nodes tagged with that drafter's index (for per-node statistics)."""
    tree = drafters[name].propose(settings)
    tree.sources = torch.full_like(tree.sources, list(drafters).index(name))
    return tree


def _draft_all(drafters: dict[str, Proposer], settings: TreeSettings) -> list[DraftTree]:
    """Every drafter's tree; remote proposers (`concurrent = True`) draft in parallel, so a step waits for the
    slowest drafter rather than for the sum of their round trips. In-process heads run in turn: torch already
    uses every core for each."""
    if len(drafters) > 1 and all(getattr(d, "concurrent", False) for d in drafters.values()):
        with ThreadPoolExecutor(len(drafters)) as pool:
            return list(pool.map(lambda name: _draft(drafters, name, settings), drafters))
    return [_draft(drafters, name, settings) for name in drafters]


class Single(Policy):
    """One drafter: the requested one, else the first configured."""

    name = "single"

    def start(self, drafters, requested):
        super().start(drafters, requested)
        self.chosen = requested or next(iter(drafters))
        return {"drafter": self.chosen}

    def propose(self, drafters, settings):
        return _draft(drafters, self.chosen, settings), [self.chosen]


class Routed(Policy):
    """All drafters draft; verify the tree with the best mean node statistic (confidence or entropy)."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.name = signal

    def _score(self, tree: DraftTree) -> float:
        if self.signal == "confidence":
            return float(tree.confidences.mean())
        return -float(tree.entropies.mean())

    def propose(self, drafters, settings):
        drafted = _draft_all(drafters, settings)
        best = max(range(len(drafted)), key=lambda i: self._score(drafted[i]))
        return drafted[best], [list(drafters)[best]]


class Merged(Policy):
    """All drafters draft; their trees are merged and verified in one target pass."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.name = f"merged-{variant}"

    def propose(self, drafters, settings):
        drafted = _draft_all(drafters, settings)
        if self.variant == "concat":
            merged = trees.concat(drafted)
        elif self.variant == "trie":
            merged = trees.trie(drafted)
        else:
            merged = trees.budget(drafted, settings.max_nodes)
        return merged, list(drafters)


class Sticky(Policy):
    """Pick one drafter per request, then draft with it only: routing quality at single-drafter cost.

    The choice is the requested/cached assignment if given, else the drafter whose head best predicts the
    target's tokens on the prompt itself (one head forward each, no extra target work).
    """

    name = "sticky"

    def start(self, drafters, requested):
        super().start(drafters, requested)
        if requested is not None:
            self.chosen = requested
            return {"drafter": requested, "assigned": True}
        scores = {name: d.prompt_agreement() for name, d in drafters.items()}
        self.chosen = max(scores, key=scores.get)
        return {"drafter": self.chosen, "assigned": False, "prompt_agreement": scores}

    def propose(self, drafters, settings):
        return _draft(drafters, self.chosen, settings), [self.chosen]


POLICIES = ("plain", "single", "confidence", "entropy", "merged", "merged-concat", "merged-trie",
            "merged-budget", "sticky")


def make_policy(name: str) -> Policy:
    """Policy by name; `merged` is the paper's concat merge."""
    if name == "plain":
        return Plain()
    if name == "single":
        return Single()
    if name in ("confidence", "entropy"):
        return Routed(name)
    if name == "merged":
        return Merged("concat")
    if name.startswith("merged-") and name[len("merged-"):] in ("concat", "trie", "budget"):
        return Merged(name[len("merged-"):])
    if name == "sticky":
        return Sticky()
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
