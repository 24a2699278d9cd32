"""The decoding loop, written once against the Proposer and Verifier interfaces."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch

from .acceptance import SamplingParams, sample_token
from .drafter import Drafter, DrafterUnavailable, Proposer, TreeSettings
from .head import DraftHead
from .policies import Policy, make_policy
from .target import Target
from .verifier import TargetVerifier, Verifier


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

    @property
    def acceptance_length(self) -> int:
        return self.accepted + 1


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str            # "eos" or "length"
    steps: list[StepRecord]
    policy: str
    decision: dict
    seconds: float

    @property
    def tau(self) -> float:
        """Acceptance length: tokens committed per target verify pass (the prefill token excluded)."""
        return sum(s.acceptance_length for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def tokens_per_s(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class StepEvent:
    """Tokens committed by one step (the prefill's first token has no step record); the last event of a
    stream carries the whole result."""

    tokens: list[int]
    step: StepRecord | None
    result: GenerationResult | None = None


class Decoder:
    """Speculative decoding with named drafters and a composition policy; `PlainDecoder` is the baseline."""

    def __init__(self, target: Target, drafters: Mapping[str, DraftHead | Proposer] | None = None,
                 policy: str | Policy = "single", tree: TreeSettings | None = None,
                 verifier: Verifier | None = None) -> None:
        self.target = target
        self.policy = make_policy(policy) if isinstance(policy, str) else policy
        self.drafters: dict[str, Proposer] = {
            name: Drafter(name, d, target) if isinstance(d, DraftHead) else d for name, d in (drafters or {}).items()
        }
        if self.policy.needs_drafters and not self.drafters:
            raise ValueError(f"policy {self.policy.name!r} needs at least one drafter")
        self.tree = tree or TreeSettings()
        self.verifier = verifier or TargetVerifier(target)

    def _check_length(self, n_prompt: int, params: SamplingParams) -> None:
        limit = getattr(self.target.config, "max_position_embeddings", None)
        needed = n_prompt + params.max_new_tokens + self.tree.depth + 1
        if limit is not None and needed > limit:
            raise ValueError(f"prompt of {n_prompt} tokens + max_new_tokens {params.max_new_tokens} exceeds the "
                             f"target's context of {limit} tokens")

    def generate(self, prompt: str | list[dict] | list[int], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_on_eos: bool = True,
                 drafter: str | None = None) -> GenerationResult:
        """Decode `prompt` (text, chat messages or token ids); `drafter` names the drafter for `single` or the
        assignment for `sticky`."""
        for event in self.stream(prompt, max_new_tokens, temperature, top_p, top_k, seed, stop_on_eos, drafter):
            pass
        return event.result

    def stream(self, prompt: str | list[dict] | list[int], max_new_tokens: int = 128, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_on_eos: bool = True,
               drafter: str | None = None) -> Iterator[StepEvent]:
        """`generate` one step at a time: an event per committed chunk, the last one carrying the result."""
        params = SamplingParams(max_new_tokens, temperature, top_p, top_k, seed, stop_on_eos)
        prompt_ids = self.target.encode_prompt(prompt)
        self._check_length(len(prompt_ids), params)
        yield from self._decode(prompt_ids, params, drafter)

    @torch.inference_mode()   # torch re-enters the mode around each resumption of the generator
    def _decode(self, prompt_ids: list[int], params: SamplingParams, drafter: str | None) -> Iterator[StepEvent]:
        eos = self.target.eos_token_ids if params.stop_on_eos else set()
        generator = torch.Generator().manual_seed(params.seed)
        policy = copy.copy(self.policy)
        start = time.perf_counter()

        features, logits = self.verifier.prefill(prompt_ids)
        out = [sample_token(logits, params, generator)]
        active = dict(self.drafters)
        for d in active.values():
            d.reset()
            d.extend(prompt_ids[1:] + out, features)
        unavailable: list[str] = []
        while True:
            try:
                decision = policy.start(active, drafter)
                break
            except DrafterUnavailable as e:
                policy, drafter = self._drop(e.name, active, unavailable, policy), None
        yield StepEvent(list(out), None)
        steps: list[StepRecord] = []
        while out[-1] not in eos and len(out) < params.max_new_tokens:
            try:
                tree, used = policy.propose(active, self.tree)
            except DrafterUnavailable as e:
                policy = self._drop(e.name, active, unavailable, policy)
                continue
            path, bonus, features = self.verifier.step(out[-1], tree, params, generator)
            new = tree.tokens[path].tolist() + [bonus]
            for d in active.values():
                d.extend(new, features)
            steps.append(self._record(tree, path, bonus, used))
            n_before = len(out)
            out.extend(new)
            hit = next((i for i in range(n_before, len(out)) if out[i] in eos), None)
            out = out[:params.max_new_tokens if hit is None else min(hit + 1, params.max_new_tokens)]
            yield StepEvent(out[n_before:], steps[-1])
        finish = "eos" if out[-1] in eos else "length"
        text = self.target.tokenizer.decode(out, skip_special_tokens=True) if self.target.tokenizer else ""
        if unavailable:
            decision = {**decision, "unavailable": unavailable}
        yield StepEvent([], None, GenerationResult(prompt_ids, out, text, finish, steps, self.policy.name, decision,
                                                   time.perf_counter() - start))

    @staticmethod
    def _drop(name: str, active: dict[str, Proposer], unavailable: list[str], policy: Policy) -> Policy:
        """Continue without a failed drafter: multi-drafter policies keep the others; a policy that had chosen
        it (single, sticky), or one left without drafters, decodes plainly. Output stays lossless either way."""
        active.pop(name, None)
        unavailable.append(name)
        if not active or getattr(policy, "chosen", None) == name:
            return make_policy("plain")
        return policy

    def _record(self, tree, path: list[int], bonus: int, used: list[str]) -> StepRecord:
        accepted = torch.zeros(len(tree), dtype=torch.bool)
        accepted[path] = True
        names = list(self.drafters)
        return StepRecord(accepted=len(path), bonus_token=bonus, drafters=used, tree_size=len(tree),
                          node_depth=tree.depths.tolist(), node_confidence=tree.confidences.tolist(),
                          node_entropy=tree.entropies.tolist(), node_accepted=accepted.tolist(),
                          node_drafter=[names[i] for i in tree.sources.tolist()] if names else [])


class PlainDecoder(Decoder):
    """Plain autoregressive decoding (greedy or sampled) through the same loop and API."""

    def __init__(self, target: Target, verifier: Verifier | None = None) -> None:
        super().__init__(target, None, "plain", verifier=verifier)
