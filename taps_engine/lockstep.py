"""Several prompts decoded in lock step: a step of every lane at a time, their drafting and verification batched.

On a CPU a head's forward over ten rows costs nearly what one over a hundred does, and a target forward reads all
its weights whatever the rows, so the lanes of a batch share those costs. Each lane runs the engine's own
decoding loop (`Decoder.stream`) with its own policy plan, sampling generator and acceptance; only the forwards are
shared:
- drafting: each lane's drafters are `_DraftedAhead` wrappers; before the lanes advance, every head drafts the next
  trees of all lanes that consulted it at the last step, in one forward per tree level (`propose_batch`);
- verification (live decoding): each lane's verifier answers `step` with a `PendingStep`, which the loop yields;
  the driver verifies every pending lane's tree in one target forward over a shared `SlotCache` (`step_batch`)
  and resumes the lanes. A replay verifier answers at once, so replay lanes share only the drafting;
- path verification (`path_only`, for acceptance studies at T>0): instead of the whole trees, the target runs on
  each lane's root and then on each node as acceptance takes it (`walk_batch`), one token per lane and forward:
  the same steps for accepted + 1 tokens of target compute per step instead of the tree's.

A lane's result is the one it would get alone, up to rounding: a lane's rows do not see the others', but the padded
batch shape changes how the sums round (`verify_batch`), so in fp32 outputs match decoding alone to a few 1e-6 of a
logit (a sampled token or a greedy argmax can flip only at such a tie), and in bf16 as any change of shape does.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

import torch

from .acceptance import SamplingParams, acceptance_walk
from .decoding import Decoder, GenerationResult
from .drafter import Drafter, propose_batch
from .prompt import Prompt
from .slots import SlotCache
from .target import Target
from .tree import DraftTree, TreeSettings
from .verifier import PendingStep, TargetVerifier, Verifier, step_batch, verify_batch


class _DraftedAhead:
    """One lane's drafter whose next tree the lock step may have drafted already, beside the other lanes' trees.

    The decoding loop hands it the step's pairs (`extend`) and later asks for a tree (`propose`); in between,
    the driver drafts the trees of every lane whose drafter was asked at the last step. A tree drafted ahead is
    exactly the one `propose` would draft: the same pairs, the same settings (else it drafts anew)."""

    def __init__(self, drafter: Drafter) -> None:
        self.drafter, self.name = drafter, drafter.name
        self.ahead: tuple[TreeSettings, DraftTree] | None = None
        self.asked = True          # consulted at the last step (or not yet started): draft its next tree ahead

    def reset(self) -> None:
        self.ahead, self.asked = None, True
        self.drafter.reset()

    def extend(self, tokens: Sequence[int], features: torch.Tensor) -> None:
        self.ahead = None
        self.drafter.extend(tokens, features)

    def prompt_agreement(self) -> float:
        return self.drafter.prompt_agreement()

    def propose(self, settings: TreeSettings) -> DraftTree:
        self.asked = True
        ahead, self.ahead = self.ahead, None
        return ahead[1] if ahead is not None and ahead[0] == settings else self.drafter.propose(settings)


def _draft_ahead(lanes: Sequence[dict[str, _DraftedAhead]], settings: TreeSettings) -> None:
    """The next trees of every lane's drafters that were asked at the last step, each head's drafted together."""
    for name in lanes[0]:
        wanted = [lane[name] for lane in lanes if lane[name].asked]
        if wanted:
            for proposer, tree in zip(wanted, propose_batch([p.drafter for p in wanted], [settings] * len(wanted))):
                proposer.ahead, proposer.asked = (settings, tree), False


class LaneVerifier:
    """A lane's `TargetVerifier` (its KV entries in one slot of the lanes' shared cache) whose steps wait for the
    lock step: `step` returns a `PendingStep` that the driver verifies with the other lanes' in one forward."""

    def __init__(self, target: Target, cache: SlotCache) -> None:
        self.inner = TargetVerifier(target, cache)

    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.prefill(ids)

    def step(self, root: int, tree: DraftTree, params: SamplingParams, generator: torch.Generator) -> PendingStep:
        return PendingStep(self.inner, root, tree, params, generator)


def lanes_drafters(decoder: Decoder, n: int) -> list[dict[str, _DraftedAhead]]:
    """`n` lanes of `decoder`'s heads: each head's lanes share one SlotCache, so they draft together."""
    if decoder.target is None or any(not isinstance(d, Drafter) for d in decoder.drafters.values()):
        raise ValueError("lock-step decoding needs a decoder with its target and heads in process")
    if decoder.tree.cost_aware or decoder.fallback:
        raise ValueError("lock-step decoding takes fixed trees without fallback (cost-aware trees and the plain "
                         "fallback time each request's own steps)")
    heads = {name: d.head for name, d in decoder.drafters.items()}
    caches = {name: SlotCache(num_layers=1) for name in heads}
    return [{name: _DraftedAhead(Drafter(name, head, decoder.target, caches[name])) for name, head in heads.items()}
            for _ in range(n)]


def walk_batch(steps: Sequence[PendingStep]) -> list[tuple[list[int], int, torch.Tensor]]:
    """Path verification: each step's acceptance walked down its tree with the target run on the accepted path
    only, one token per lane and forward (the root, then each node as it is accepted), as plain decoding runs.

    The walk consumes each lane's generator exactly as verifying the whole tree does and sees the same logits up
    to rounding, so the accepted path and bonus are the tree verification's; the target computes accepted + 1
    tokens per step instead of the whole tree. Every forwarded token is committed, so nothing is compacted. An
    evaluation device: it gives a policy's τ at T>0 for a fraction of the compute, not its speed."""
    walks = [acceptance_walk(s.tree, s.params, s.generator) for s in steps]
    for walk in walks:
        next(walk)                                   # the root's row comes first
    tokens = [s.root for s in steps]
    features: list[list[torch.Tensor]] = [[] for _ in steps]
    results: list[tuple[list[int], int, torch.Tensor] | None] = [None] * len(steps)
    running = list(range(len(steps)))
    while running:
        verifiers = [steps[i].verifier for i in running]
        outputs = verify_batch(verifiers, [tokens[i] for i in running], [DraftTree.empty()] * len(running))
        for i, verifier, (logits, feature) in zip(running, verifiers, outputs):
            verifier.commit([0])
            features[i].append(feature[0])
            try:
                tokens[i] = int(steps[i].tree.tokens[walks[i].send(logits[0]) - 1])
            except StopIteration as done:
                path, bonus = done.value
                results[i] = (path, bonus, torch.stack(features[i]))
        running = [i for i in running if results[i] is None]
    return results


def decode_lanes(decoder: Decoder, lanes: Sequence[dict[str, _DraftedAhead]], verifiers: Sequence[Verifier],
                 prompts: Sequence[Prompt], params: Sequence[SamplingParams], drafters: Sequence[str | None],
                 path_only: bool = False) -> list[GenerationResult]:
    """Run each lane's decoding loop (`decoder`'s policy and tree, the lane's drafters and verifier) in lock step;
    with `path_only`, pending steps are verified along their accepted paths only (`walk_batch`).

    A lane's `seconds` is its share of the batch's wall time: each round's time split evenly over the lanes in it
    (so tokens/s are a batch's throughput per lane, not one request's latency)."""
    streams = [Decoder(decoder.format, lane, decoder.policy, decoder.tree, verifier=verifier).stream(p, s, d)
               for lane, verifier, p, s, d in zip(lanes, verifiers, prompts, params, drafters)]
    shares = [0.0] * len(streams)
    for i, stream in enumerate(streams):   # prefill and first token: the lanes' drafters now hold their prompts
        start = time.perf_counter()
        next(stream)
        shares[i] += time.perf_counter() - start
    results: list[GenerationResult | None] = [None] * len(streams)
    running = list(range(len(streams)))
    while running:
        start = time.perf_counter()
        if lanes[0]:
            _draft_ahead([lanes[i] for i in running], decoder.tree)
        events = {i: next(streams[i]) for i in running}
        pending = {i: e for i, e in events.items() if isinstance(e, PendingStep)}
        if pending:
            steps = list(pending.values())
            verdicts = walk_batch(steps) if path_only else step_batch(*zip(*(p.call() for p in steps)))
            for step, verdict in zip(steps, verdicts):
                step.result = verdict
            events.update({i: next(streams[i]) for i in pending})
        for i in running:
            shares[i] += (time.perf_counter() - start) / len(running)
            results[i] = events[i].result
        running = [i for i in running if results[i] is None]
    return [replace(r, seconds=s) for r, s in zip(results, shares)]


def generate_batch(decoder: Decoder, prompts: Sequence[Prompt], params: Sequence[SamplingParams],
                   drafters: Sequence[str | None] | None = None, path_only: bool = False) -> list[GenerationResult]:
    """Live decoding of several prompts in lock step (`params[i]` and `drafters[i]` for prompt i): each lane's
    output is what `decoder.generate` gives it alone, at T=0 exactly plain greedy decoding in fp32 up to rounding
    ties, at T>0 the target's sampling distribution (see the module docstring). `path_only`: path verification
    (`walk_batch`), for acceptance studies: the same steps, a fraction of the target's compute, no speed figure."""
    if len(params) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling parameters")
    lanes = lanes_drafters(decoder, len(prompts))
    cache = SlotCache.for_model(decoder.target.model.config, slots=len(prompts))
    verifiers = [LaneVerifier(decoder.target, cache) for _ in prompts]
    return decode_lanes(decoder, lanes, verifiers, prompts, params, drafters or [None] * len(prompts), path_only)
