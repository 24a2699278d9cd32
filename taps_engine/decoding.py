"""The decoding loop, written once against the Proposer and Verifier interfaces."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Mapping

import torch

from .acceptance import SamplingParams, sample_token
from .drafter import Drafter, DrafterUnavailable, Proposer, Recoverable
from .costs import verify_costs
from .economics import CostModel, StepEconomics
from .head import DraftHead
from .policies import PLAIN, Decision, Plan, Policy, make_policy, policy_spec
from .prompt import Prompt, PromptFormat
from .target import Target
from .tree import DraftTree, TreeSettings, default_tree
from .verifier import PendingStep, TargetVerifier, Verifier


@dataclass
class StepRecord:
    """One verification step: what was drafted, by whom, and what the target kept."""

    accepted: int                 # draft tokens accepted (acceptance length = accepted + 1)
    bonus_token: int
    drafters: list[str]
    tree_size: int                # draft nodes verified (root excluded)
    node_depth: list[int] = field(default_factory=list)
    node_confidence: list[float] = field(default_factory=list)
    node_entropy: list[float] = field(default_factory=list)
    node_accepted: list[bool] = field(default_factory=list)
    node_drafter: list[str] = field(default_factory=list)
    committed: int | None = None  # tokens the step added to the output: accepted + 1 unless EOS or
                                  # max_new_tokens cut the step short (None: not cut, e.g. a constructed record)
    candidate_accepted: dict[str, int] = field(default_factory=dict)  # draft tokens each drafter's own tree would
                                  # have accepted at this step (replay only: the continuation is known)
    draft_s: float = 0.0          # wall time drafting (proposers, policy)
    verify_s: float = 0.0         # wall time of the target's verification and acceptance
    other_s: float = 0.0          # the rest of the step: committing, bookkeeping

    @property
    def acceptance_length(self) -> int:
        """Tokens this step committed: τ counts what was kept, not what a cut step accepted beyond the end."""
        return self.accepted + 1 if self.committed is None else self.committed

    @property
    def seconds(self) -> float:
        return self.draft_s + self.verify_s + self.other_s


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str            # "eos" or "length"
    steps: list[StepRecord]
    policy: str
    decision: Decision
    seconds: float

    @property
    def tau(self) -> float:
        """Acceptance length: tokens committed per target verify pass (the prefill token excluded)."""
        return sum(s.acceptance_length for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0

    @property
    def plain_steps(self) -> int:
        """Steps that verified no draft (speculation paused, or no drafter left)."""
        return sum(s.tree_size == 0 for s in self.steps)

    @property
    def drafted_tau(self) -> float:
        """τ over the steps that verified a draft: what the drafters achieved, apart from the steps the fallback
        took plainly while speculation did not pay (those commit one token each and say nothing of the drafts)."""
        drafted = [s.acceptance_length for s in self.steps if s.tree_size > 0]
        return sum(drafted) / len(drafted) if drafted else 0.0


@dataclass
class StepEvent:
    """Tokens committed by one step (the prefill's first token has no step record); the last event of a
    stream carries the whole result."""

    tokens: list[int]
    step: StepRecord | None
    result: GenerationResult | None = None


class Decoder:
    """Speculative decoding with named drafters and a composition policy; `PlainDecoder` is the baseline.

    `target` is a loaded `Target` (drafters may then be draft heads, run in process) or, when drafters and the
    verifier are remote, just its `PromptFormat`.
    """

    def __init__(self, target: Target | PromptFormat, drafters: Mapping[str, DraftHead | Proposer] | None = None,
                 policy: str | Policy = "single", tree: TreeSettings | None = None,
                 verifier: Verifier | None = None, fallback: bool = False, costs: CostModel | None = None) -> None:
        """`fallback`: step plainly while this request's measured speculative steps commit fewer tokens per second
        than plain ones (taps_engine/economics.py); off, every step speculates (what acceptance studies measure).
        `costs`: the cost model of a cost-aware tree when the verifier is remote (the target's machine measured
        it); in process it is built from the target's cost curve on first use."""
        loaded = target if isinstance(target, Target) else None
        self.format = loaded.format if loaded is not None else target
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.drafters: dict[str, Proposer] = {
            name: Drafter(name, d, target) if isinstance(d, DraftHead) else d for name, d in (drafters or {}).items()
        }
        if policy_spec(self.policy.name).needs_drafters and not self.drafters:
            raise ValueError(f"policy {self.policy.name!r} needs at least one drafter")
        if verifier is None and loaded is None:
            raise ValueError("a Decoder without a loaded Target needs a verifier")
        self.tree = tree or default_tree(loaded.device if loaded is not None else "cpu")
        self.verifier = verifier or TargetVerifier(target)
        self.fallback = fallback
        self.economics: Callable[[], StepEconomics] = StepEconomics   # the fallback's rule, per request
        if self.tree.cost_aware and loaded is None and costs is None:
            raise ValueError("cost-aware trees need the target in process or a cost model (its verify cost curve)")
        self._target = loaded
        self._costs = costs

    @property
    def target(self) -> Target | None:
        """The target in process, or None when the verifier is remote."""
        return self._target

    @property
    def costs(self) -> CostModel | None:
        """The cost model of cost-aware trees: this machine's verify costs (cached under TAPS_HOME, measured on
        first use) and a calibration that learns from every verified step of this decoder."""
        if self.tree.cost_aware and self._costs is None:
            self._costs = CostModel(verify_costs(self._target))
        return self._costs

    def generate(self, prompt: Prompt, params: SamplingParams | None = None, drafter: str | None = None,
                 **sampling) -> GenerationResult:
        """Decode `prompt` (text, chat messages or token ids) with `params`, or SamplingParams fields given as
        keywords; `drafter` names the drafter for `single` or the assignment for `sticky` and `probe`."""
        for event in self.stream(prompt, params or SamplingParams(**sampling), drafter):
            pass
        return event.result

    def stream(self, prompt: Prompt, params: SamplingParams, drafter: str | None = None
               ) -> Iterator[StepEvent | PendingStep]:
        """`generate` one step at a time: an event per committed chunk, the last one carrying the result (a lane
        of lock-step decoding also yields each step's `PendingStep` before its event: lockstep.py)."""
        prompt_ids = self.format.encode(prompt)
        self.format.check_length(len(prompt_ids), params.max_new_tokens, self.tree.depth + 2)
        yield from self._decode(prompt_ids, params, drafter)

    @torch.inference_mode()   # torch re-enters the mode around each resumption of the generator
    def _decode(self, prompt_ids: list[int], params: SamplingParams, drafter: str | None
                ) -> Iterator[StepEvent | PendingStep]:
        eos = self.format.eos_token_ids if params.stop_on_eos else frozenset()
        generator = torch.Generator().manual_seed(params.seed)
        start = time.perf_counter()

        features, logits = self.verifier.prefill(prompt_ids)
        out = [sample_token(logits, params, generator)]
        active = dict(self.drafters)
        for d in active.values():
            d.reset()
            d.extend(prompt_ids[1:] + out, features)
        plan = self._start(active, drafter)
        chosen, dropped = plan, {}
        economics = self.economics() if self.fallback else None
        costs = self.costs
        judge = getattr(self.verifier, "accepted_length", None)   # a verifier that knows the continuation
        yield StepEvent(list(out), None)
        steps: list[StepRecord] = []
        while out[-1] not in eos and len(out) < params.max_new_tokens:
            t0 = time.perf_counter()
            for name in [n for n, d in dropped.items() if d.recovered()]:
                dropped.pop(name).rejoin(prompt_ids[1:] + out)
                active = {n: d for n, d in self.drafters.items() if n in active or n == name}
                plan = plan.rejoined(name, chosen)
            policy = plan.policy if economics is None or economics.speculate() else PLAIN
            try:
                proposal = policy.propose(plan, active, self.tree if costs is None else costs.settings(self.tree))
            except DrafterUnavailable as e:
                failed = active.pop(e.name, None)
                if isinstance(failed, Recoverable):
                    dropped[e.name] = failed
                plan = plan.without(e.name, active)
                continue
            tree = proposal.tree
            if costs is not None:
                tree = costs.prune(tree, 1e3 * (time.perf_counter() - t0))
            judged = {name: judge(t) for name, t in (proposal.candidates or {}).items()} if judge else {}
            t1 = time.perf_counter()
            verdict = self.verifier.step(out[-1], tree, params, generator)
            if isinstance(verdict, PendingStep):   # a lock-step lane: verified with the other lanes' steps
                yield verdict
                verdict = verdict.result
            path, bonus, features = verdict
            t2 = time.perf_counter()
            new = tree.tokens[path].tolist() + [bonus]
            for d in active.values():
                d.extend(new, features)
            step = _record(tree, path, bonus, proposal.drafters, plan.roster)
            step.candidate_accepted = judged
            n_before = len(out)
            out.extend(new)
            hit = next((i for i in range(n_before, len(out)) if out[i] in eos), None)
            out = out[:params.max_new_tokens if hit is None else min(hit + 1, params.max_new_tokens)]
            step.committed = len(out) - n_before
            plan = policy.observe(plan, proposal, new)
            step.draft_s, step.verify_s, step.other_s = t1 - t0, t2 - t1, time.perf_counter() - t2
            if costs is not None:
                costs.observe(tree, path, len(new), 1e3 * step.seconds, 1e3 * step.draft_s)
            if economics is not None:
                economics.record(len(new), step.seconds, speculative=policy is not PLAIN)
            steps.append(step)
            yield StepEvent(out[n_before:], step)
        finish = "eos" if out[-1] in eos else "length"
        yield StepEvent([], None, GenerationResult(prompt_ids, out, self.format.decode(out), finish, steps,
                                                   self.policy.name, plan.decision, time.perf_counter() - start))

    def _start(self, active: dict[str, Proposer], requested: str | None) -> Plan:
        """The request's plan; a drafter failing while the policy starts (sticky's scoring) is dropped first."""
        unavailable: list[str] = []
        while True:
            try:
                plan = self.policy.start(active, requested)
                break
            except DrafterUnavailable as e:
                active.pop(e.name, None)
                unavailable.append(e.name)
                requested = None
                if not active:
                    plan = Plan(PLAIN, ())
                    break
        return replace(plan, decision=replace(plan.decision, unavailable=tuple(unavailable)))


def _record(tree: DraftTree, path: list[int], bonus: int, used: list[str], roster: tuple[str, ...]) -> StepRecord:
    accepted = torch.zeros(len(tree), dtype=torch.bool)
    accepted[path] = True
    return StepRecord(accepted=len(path), bonus_token=bonus, drafters=used, tree_size=len(tree),
                      node_depth=tree.depths.tolist(), node_confidence=tree.confidences.tolist(),
                      node_entropy=tree.entropies.tolist(), node_accepted=accepted.tolist(),
                      node_drafter=[roster[i] for i in tree.sources.tolist()])


class PlainDecoder(Decoder):
    """Plain autoregressive decoding (greedy or sampled) through the same loop and API."""

    def __init__(self, target: Target | PromptFormat, verifier: Verifier | None = None) -> None:
        super().__init__(target, None, "plain", verifier=verifier)
