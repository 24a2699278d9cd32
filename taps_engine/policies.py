"""Composition policies: which drafter(s) draft each step and which tree the target verifies.

Verification is the same for every policy, so every policy is lossless; they differ only in acceptance length
and drafting cost.

Each policy declares what the rest of the project needs to know about it (`PolicySpec`): its name and aliases,
whether it needs drafters, whether a request may name a drafter, whether the server offers it, and which drafters
a request needs sessions for. CLI help, config validation, serving validation and evaluation derive from
`POLICY_SPECS`; adding a policy is adding a class and one entry there.

A policy object holds no per-request state: `start` returns an immutable `Plan` for the request, and `propose`
reads only that plan.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Mapping

import torch

from . import tree as trees
from .acceptance import follow_continuation
from .drafter import Proposer
from .tree import DraftTree, TreeSettings


@dataclass(frozen=True)
class Decision:
    """How a request's drafter was chosen, as results, records and the gRPC API report it."""

    drafter: str | None = None                  # the one drafter used throughout (single, sticky), or after probing
    assigned: bool | None = None                # sticky, probe: given by the caller or the assignment cache
    prompt_agreement: Mapping[str, float] = field(default_factory=dict)  # sticky: each drafter's prompt score
    probe_matched: Mapping[str, int] = field(default_factory=dict)  # probe: committed tokens each drafter's
                                                                    # trees spelled while all drafted
    probe_steps: int = 0                        # probe: steps taken with every drafter drafting
    unavailable: tuple[str, ...] = ()           # drafters dropped after failing mid-request

    @property
    def scores(self) -> dict[str, float]:
        """Each drafter's score behind an explored choice (sticky's prompt agreement, probe's matched tokens)."""
        return dict(self.prompt_agreement) or {k: float(v) for k, v in self.probe_matched.items()}

    def to_dict(self) -> dict:
        """The fields that say something (JSON records, `taps generate --json`)."""
        out = asdict(self)
        out["prompt_agreement"] = dict(self.prompt_agreement)
        out["probe_matched"] = dict(self.probe_matched)
        out["unavailable"] = list(self.unavailable)
        if not self.probe_steps:
            del out["probe_steps"]
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}


@dataclass(frozen=True)
class Plan:
    """A request's fixed choices: the drafters in play (their order indexes tree nodes' `sources`), the one
    drafter every step uses (single, sticky; None = the policy drafts with all), and the decision reported."""

    policy: "Policy"
    roster: tuple[str, ...]
    drafter: str | None = None
    decision: Decision = field(default_factory=Decision)

    def without(self, name: str, active: Mapping[str, Proposer]) -> "Plan":
        """The plan after `name` failed: the others go on, or plain decoding when it was the chosen one or the
        last one. Output stays lossless either way."""
        decision = replace(self.decision, unavailable=(*self.decision.unavailable, name))
        if self.drafter == name or not active:
            return replace(self, policy=PLAIN, drafter=None, decision=decision)
        return replace(self, decision=decision)

    def rejoined(self, name: str, chosen: "Plan") -> "Plan":
        """The plan after `name` came back: the request's `chosen` plan again when `name` is the drafter it uses
        (or one of all it drafts with); `name` stays listed as having been unavailable."""
        if chosen.drafter in (None, name):
            return replace(self, policy=chosen.policy, drafter=chosen.drafter)
        return self


@dataclass(frozen=True)
class Proposal:
    tree: DraftTree
    drafters: list[str]       # the drafters whose trees were verified
    candidates: Mapping[str, DraftTree] | None = None   # every drafter's own tree, when several drafted: what
                                                        # an oracle router could have chosen from (replay judges them)


class Policy(ABC):
    name: str

    def start(self, drafters: Mapping[str, Proposer], requested: str | None) -> Plan:
        """Per-request setup; `requested` names the drafter (single) or the assignment (sticky)."""
        if requested is not None and requested not in drafters:
            raise ValueError(f"unknown drafter {requested!r}; available: {', '.join(drafters) or 'none'}")
        return Plan(self, tuple(drafters))

    @abstractmethod
    def propose(self, plan: Plan, drafters: Mapping[str, Proposer], settings: TreeSettings) -> Proposal:
        """The tree to verify this step, from the drafters still active."""

    def observe(self, plan: Plan, proposal: Proposal, committed: list[int]) -> Plan:
        """The plan for the next step, given the step's proposal and the tokens it committed (the accepted path
        and the bonus token); a policy that learns within a request (probe) returns a new plan."""
        return plan


class Plain(Policy):
    """No drafts: one target token per forward (the baseline through the same loop)."""

    name = "plain"

    def propose(self, plan, drafters, settings):
        return Proposal(DraftTree.empty(), [])


def _draft(plan: Plan, drafters: Mapping[str, Proposer], name: str, settings: TreeSettings) -> DraftTree:
    """One drafter's tree, its nodes tagged with the drafter's index in the request's roster."""
    tree = drafters[name].propose(settings)
    tree.sources = torch.full_like(tree.sources, plan.roster.index(name))
    return tree


def _chosen(plan: Plan, drafters: Mapping[str, Proposer], settings: TreeSettings) -> Proposal:
    """The tree of the request's one drafter (`plan.drafter`)."""
    return Proposal(_draft(plan, drafters, plan.drafter, settings), [plan.drafter])


def _draft_all(plan: Plan, drafters: Mapping[str, Proposer], settings: TreeSettings) -> list[DraftTree]:
    """Every active drafter's tree; remote proposers (`concurrent = True`) draft in parallel, so a step waits for
    the slowest drafter rather than for the sum of their round trips. In-process heads run in turn: torch already
    uses every core for each."""
    if len(drafters) > 1 and all(getattr(d, "concurrent", False) for d in drafters.values()):
        with ThreadPoolExecutor(len(drafters)) as pool:
            return list(pool.map(lambda name: _draft(plan, drafters, name, settings), drafters))
    return [_draft(plan, drafters, name, settings) for name in drafters]


class Single(Policy):
    """One drafter: the requested one, else the first configured."""

    name = "single"

    def start(self, drafters, requested):
        plan = super().start(drafters, requested)
        chosen, = _requested_or_first(list(drafters), requested)
        return replace(plan, drafter=chosen, decision=Decision(drafter=chosen))

    def propose(self, plan, drafters, settings):
        return _chosen(plan, drafters, settings)


class Routed(Policy):
    """All drafters draft; verify the tree with the best mean node statistic (confidence or entropy)."""

    def __init__(self, signal: str) -> None:
        self.name = signal

    def _score(self, tree: DraftTree) -> float:
        if self.name == "confidence":
            return float(tree.confidences.mean())
        return -float(tree.entropies.mean())

    def propose(self, plan, drafters, settings):
        drafted = _draft_all(plan, drafters, settings)
        best = max(range(len(drafted)), key=lambda i: self._score(drafted[i]))
        return Proposal(drafted[best], [list(drafters)[best]], dict(zip(drafters, drafted)))


class Merged(Policy):
    """All drafters draft; their trees are merged and verified in one target pass."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.name = f"merged-{variant}"

    def propose(self, plan, drafters, settings):
        drafted = _draft_all(plan, drafters, settings)
        if self.variant == "concat":
            merged = trees.concat(drafted)
        elif self.variant == "trie":
            merged = trees.trie(drafted)
        else:
            merged = trees.budget(drafted, settings.max_nodes)
        return Proposal(merged, list(drafters), dict(zip(drafters, drafted)))


class Sticky(Policy):
    """Pick one drafter per request, then draft with it only: routing quality at single-drafter cost.

    The choice is the requested/cached assignment if given, else the drafter whose head best predicts the
    target's tokens on the prompt itself (one head forward each, no extra target work).
    """

    name = "sticky"

    def start(self, drafters, requested):
        plan = super().start(drafters, requested)
        if requested is not None:
            return replace(plan, drafter=requested, decision=Decision(drafter=requested, assigned=True))
        scores = {name: d.prompt_agreement() for name, d in drafters.items()}
        chosen = max(scores, key=scores.get)
        return replace(plan, drafter=chosen,
                       decision=Decision(drafter=chosen, assigned=False, prompt_agreement=scores))

    def propose(self, plan, drafters, settings):
        return _chosen(plan, drafters, settings)


PROBE_MARGIN = 3      # `probe` keeps the drafter whose trees matched this many committed tokens more than any other's
PROBE_MAX_STEPS = 16  # ... or the leader after this many steps


class Probe(Policy):
    """Every drafter drafts (the most confident tree is verified, as `confidence` does), each credited with the
    committed tokens its own tree spelled, until one leads the others by `PROBE_MARGIN` tokens (or for
    `PROBE_MAX_STEPS` steps); then the leader drafts alone.

    Sticky scores the drafters on the prompt's tokens, which say little about the reply on a short prompt (on
    `make run`'s chat prompt it picked the head that accepts less there); the probe scores them on the request's
    own output, at the price of a few steps of every drafter drafting.
    """

    name = "probe"

    def __init__(self) -> None:
        self._routed = Routed("confidence")

    def start(self, drafters, requested):
        plan = super().start(drafters, requested)
        if requested is not None:
            return replace(plan, drafter=requested, decision=Decision(drafter=requested, assigned=True))
        return plan

    def propose(self, plan, drafters, settings):
        if plan.drafter is not None:
            return _chosen(plan, drafters, settings)
        return self._routed.propose(plan, drafters, settings)

    def observe(self, plan, proposal, committed):
        if plan.drafter is not None or not proposal.candidates:
            return plan
        matched = dict(plan.decision.probe_matched)
        for name, tree in proposal.candidates.items():
            matched[name] = matched.get(name, 0) + len(follow_continuation(committed, tree)[0])
        decision = replace(plan.decision, probe_matched=matched, probe_steps=plan.decision.probe_steps + 1)
        ranked = sorted(proposal.candidates, key=matched.__getitem__, reverse=True)   # the drafters still active
        lead = matched[ranked[0]] - (matched[ranked[1]] if len(ranked) > 1 else 0)
        if lead < PROBE_MARGIN and decision.probe_steps < PROBE_MAX_STEPS:
            return replace(plan, decision=decision)
        chosen = ranked[0]
        return replace(plan, drafter=chosen, decision=replace(decision, drafter=chosen, assigned=False))


PLAIN = Plain()


def _every(available: list[str], requested: str | None) -> list[str]:
    return list(available)


def _one_or_every(available: list[str], requested: str | None) -> list[str]:
    return [requested] if requested is not None else list(available)


def _requested_or_first(available: list[str], requested: str | None) -> list[str]:
    return [requested or available[0]] if available else []


def _none(available: list[str], requested: str | None) -> list[str]:
    return []


@dataclass(frozen=True)
class PolicySpec:
    """What a policy is, for everything outside the decoding loop."""

    name: str
    build: Callable[[], Policy]
    summary: str
    needs_drafters: bool = True
    max_drafters: int | None = None    # drafters a run may configure (None: any number)
    takes_drafter: bool = False        # a request may name the drafter (single) or the assignment (sticky)
    assignable: bool = False           # its per-request choice is remembered per conversation (assignment cache)
    aliases: tuple[str, ...] = ()
    # the drafters a request needs sessions for, given the configured ones and the requested drafter
    sessions: Callable[[list[str], str | None], list[str]] = _every


POLICY_SPECS: tuple[PolicySpec, ...] = (
    PolicySpec("plain", Plain, "no drafts: the target alone, through the same loop (the baseline)",
               needs_drafters=False, max_drafters=0, sessions=_none),
    PolicySpec("single", Single, "one drafter (the requested one, else the first)", max_drafters=1,
               takes_drafter=True, sessions=_requested_or_first),
    PolicySpec("confidence", lambda: Routed("confidence"),
               "all draft; verify the tree with the highest mean node confidence"),
    PolicySpec("entropy", lambda: Routed("entropy"), "all draft; verify the tree with the lowest mean entropy"),
    PolicySpec("merged-concat", lambda: Merged("concat"), "all draft; trees concatenated under one root (paper)",
               aliases=("merged",)),
    PolicySpec("merged-trie", lambda: Merged("trie"), "all draft; trees merged with shared prefixes once"),
    PolicySpec("merged-budget", lambda: Merged("budget"),
               "all draft; the merged trie reranked to one tree's node budget"),
    PolicySpec("sticky", Sticky, "one drafter per request: the assigned one, else the best on the prompt",
               takes_drafter=True, assignable=True, sessions=_one_or_every),
    PolicySpec("probe", Probe, f"one drafter per request: the assigned one, else the one whose trees matched the "
               f"most output while all drafted (until one led by {PROBE_MARGIN} tokens)",
               takes_drafter=True, assignable=True, sessions=_one_or_every),
)
_BY_NAME = {name: spec for spec in POLICY_SPECS for name in (spec.name, *spec.aliases)}
POLICIES = tuple(_BY_NAME)   # every accepted name, aliases included, in registry order
# how a request is routed when it names no policy: `taps generate`, `taps demo` (`make run`) and the service
# (results/engine/README.md and results/serving/README.md, "Which policy ...")
DEFAULT_ROUTING = "probe"


def policy_spec(name: str) -> PolicySpec:
    """The spec for a name or alias; ValueError listing the choices otherwise."""
    spec = _BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    return spec


def make_policy(name: str) -> Policy:
    """Policy by name or alias (`merged` is the paper's concat merge)."""
    return policy_spec(name).build()
