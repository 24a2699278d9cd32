"""The decoding loop, written once against the Proposer and Verifier interfaces."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Mapping

import torch

from .acceptance import SamplingParams, accept_greedy, accept_sampling, sample_token
from .drafter import Drafter, Proposer, TreeSettings
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

    @torch.inference_mode()
    def generate(self, prompt: str | list[dict] | list[int], max_new_tokens: int = 128, temperature: float = 0.0,
                 top_p: float = 1.0, top_k: int = 0, seed: int = 0, stop_on_eos: bool = True,
                 drafter: str | None = None) -> GenerationResult:
        """Decode `prompt` (text, chat messages or token ids); `drafter` names the drafter for `single` or the
        assignment for `sticky`."""
        params = SamplingParams(max_new_tokens, temperature, top_p, top_k, seed, stop_on_eos)
        prompt_ids = self.target.encode_prompt(prompt)
        self._check_length(len(prompt_ids), params)
        eos = self.target.eos_token_ids if stop_on_eos else set()
        generator = torch.Generator().manual_seed(seed)
        policy = copy.copy(self.policy)
        start = time.perf_counter()

        features, logits = self.verifier.prefill(prompt_ids)
        out = [sample_token(logits, params, generator)]
        for d in self.drafters.values():
            d.reset()
            d.extend(prompt_ids[1:] + out, features)
        decision = policy.start(self.drafters, drafter)
        steps: list[StepRecord] = []
        while out[-1] not in eos and len(out) < params.max_new_tokens:
            tree, used = policy.propose(self.drafters, self.tree)
            logits, features = self.verifier.verify(out[-1], tree)
            if params.greedy:
                path, bonus = accept_greedy(logits, tree)
            else:
                path, bonus = accept_sampling(logits, tree, params, generator)
            rows = [0] + [i + 1 for i in path]
            self.verifier.commit(rows)
            new = tree.tokens[path].tolist() + [bonus]
            for d in self.drafters.values():
                d.extend(new, features[rows])
            steps.append(self._record(tree, path, bonus, used))
            n_before = len(out)
            out.extend(new)
            hit = next((i for i in range(n_before, len(out)) if out[i] in eos), None)
            if hit is not None:
                out = out[:hit + 1]
        out = out[:params.max_new_tokens]
        finish = "eos" if out[-1] in eos else "length"
        text = self.target.tokenizer.decode(out, skip_special_tokens=True) if self.target.tokenizer else ""
        return GenerationResult(prompt_ids, out, text, finish, steps, policy.name, decision,
                                time.perf_counter() - start)

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
