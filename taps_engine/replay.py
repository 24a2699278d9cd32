"""Exact acceptance lengths at T=0 without target verification passes.

At T=0 every policy commits plain greedy decoding's tokens, so a step's accepted path is determined by that
continuation: the longest tree path whose tokens it spells (same-token siblings merged, as in live acceptance).
`reference` decodes a prompt once plainly (a few tokens past `max_new_tokens`, past EOS too, so paths that run
beyond the end are judged as live verification judges them) and runs one target forward over prompt and
continuation for the features; `ReplayVerifier` then answers the decoding loop's verifier calls from them. The
loop, the policies and the drafters run unchanged and are fed exactly what live decoding feeds them, so the step
records (accepted counts, trees, drafter choices) are live decoding's. Only T=0: sampled acceptance depends on the
target's probabilities at every tree node.

In fp32 replay equals live decoding step for step (tests/test_replay.py). In bf16 the features of one long forward
round differently from those of live decoding's tree forwards, so replay is then an estimate of the live τ.

`replay_batch` replays several prompts in lock step so that, at every step, each head drafts the next trees of all
of them together (one head forward per tree level), as a drafter replica drafts its sessions' trees: on a CPU a
head's forward over ten rows costs nearly what one over a hundred does, so this is where replay's time goes.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from .acceptance import SamplingParams, follow_continuation
from .decoding import Decoder, GenerationResult
from .fileio import atomic_write
from .greedy import greedy_batch
from .lockstep import decode_lanes, lanes_drafters
from .prompt import Prompt
from .settings import taps_home
from .target import Target
from .tree import DraftTree


@dataclass
class Reference:
    """A prompt's plain greedy continuation and the target's features along prompt + continuation."""

    prompt_ids: list[int]
    continuation: list[int]
    features: torch.Tensor      # (len(prompt_ids) + len(continuation), H)


@torch.no_grad()
def references_batch(target: Target, prompts: Sequence[Prompt], max_new_tokens: int, margin: int) -> list[Reference]:
    """Plain greedy decoding of each prompt to `max_new_tokens + margin` tokens (EOS does not stop it), the
    prompts decoded together (`greedy_batch`), then one feature forward over each prompt and continuation."""
    n = max_new_tokens + margin
    ids = [target.format.encode(p) for p in prompts]
    for prompt_ids in ids:
        target.format.check_length(len(prompt_ids), n, 0)
    decoder = target.model.get_decoder()
    return [Reference(prompt_ids, o, decoder(input_ids=torch.tensor([prompt_ids + o], device=target.device))
                      .last_hidden_state[0]) for prompt_ids, o in zip(ids, greedy_batch(target, ids, n))]


def reference(target: Target, prompt: Prompt, max_new_tokens: int, margin: int) -> Reference:
    """`references_batch` of one prompt: exactly what the engine's plain loop decodes."""
    return references_batch(target, [prompt], max_new_tokens, margin)[0]


class ReplayVerifier:
    """The Verifier of one prompt whose plain greedy continuation is known (see the module docstring)."""

    def __init__(self, ref: Reference, vocab_size: int) -> None:
        self.ref = ref
        self.vocab_size = vocab_size
        self.committed = 0          # continuation tokens committed so far (the pending root included)

    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if list(ids) != self.ref.prompt_ids:
            raise ValueError("replay: the prompt differs from the reference's")
        logits = torch.zeros(self.vocab_size)
        logits[self.ref.continuation[0]] = 1.0
        self.committed = 1
        return self.ref.features[:len(ids)], logits

    def _follow(self, tree: DraftTree) -> tuple[list[int], int]:
        """The path the target accepts in `tree` at the current position, and its bonus token."""
        return follow_continuation(self.ref.continuation[self.committed:], tree)

    def accepted_length(self, tree: DraftTree) -> int:
        """Draft tokens `tree` would have accepted at this step (nothing is committed): an oracle's view."""
        return len(self._follow(tree)[0])

    def step(self, root: int, tree: DraftTree, params: SamplingParams,
             generator: torch.Generator) -> tuple[list[int], int, torch.Tensor]:
        if not params.greedy:
            raise ValueError("replay reproduces T=0 only; sample live at T>0")
        n = self.committed
        path, bonus = self._follow(tree)
        root_position = len(self.ref.prompt_ids) + n - 1
        rows = [root_position] + [root_position + int(tree.depths[i]) for i in path]
        self.committed += len(path) + 1
        return path, bonus, self.ref.features[rows]


def _replay_verifier(decoder: Decoder, ref: Reference, params: SamplingParams) -> ReplayVerifier:
    """`ref`'s known continuation as the verifier of `decoder`'s steps, once it is checked to be long enough."""
    needed = params.max_new_tokens + decoder.tree.depth + 2   # the deepest draft of the last step, and its bonus
    if len(ref.continuation) < needed:
        raise ValueError(f"replay: the reference holds {len(ref.continuation)} tokens; this tree and "
                         f"max_new_tokens need {needed} (reference margin >= tree depth + 2)")
    return ReplayVerifier(ref, decoder.format.vocab_size)


def replay(decoder: Decoder, ref: Reference, params: SamplingParams, drafter: str | None = None) -> GenerationResult:
    """`decoder`'s policy and drafters on `ref`'s prompt, its verifier replaced by the known continuation."""
    replaying = Decoder(decoder.format, decoder.drafters, decoder.policy, decoder.tree,
                        verifier=_replay_verifier(decoder, ref, params))
    return replaying.generate(ref.prompt_ids, params, drafter)


def replay_batch(decoder: Decoder, refs: Sequence[Reference], params: SamplingParams,
                 drafters: Sequence[str | None] | None = None) -> list[GenerationResult]:
    """`replay` of each reference (with `drafters[i]` as its requested drafter), in lock step: a step of every
    lane at a time, each head drafting all lanes' next trees in one forward per tree level (lockstep.py)."""
    lanes = lanes_drafters(decoder, len(refs))
    verifiers = [_replay_verifier(decoder, ref, params) for ref in refs]
    return decode_lanes(decoder, lanes, verifiers, [ref.prompt_ids for ref in refs], [params] * len(refs),
                        drafters or [None] * len(refs))


class References:
    """`reference` for prompts, computed once and kept under `$TAPS_HOME/references/`, so that every drafter and
    policy replayed on a prompt, now or in a later run, shares one plain decoding; a few recent ones stay in
    memory (the runs of a prompt follow each other). `many` decodes the missing ones of several prompts together."""

    def __init__(self, target: Target, max_new_tokens: int, margin: int, size: int = 8) -> None:
        self.target, self.max_new_tokens, self.margin, self.size = target, max_new_tokens, margin, size
        self.cache: OrderedDict[str, Reference] = OrderedDict()
        self.directory = taps_home() / "references"
        model = target.model   # what every reference depends on besides its prompt
        self.identity = [target.name, str(model.dtype), model.config.get_text_config().to_json_string(),
                         max_new_tokens, margin]

    def _key(self, prompt: Prompt) -> str:
        return hashlib.sha256(json.dumps([*self.identity, prompt], sort_keys=True).encode()).hexdigest()[:24]

    def __call__(self, prompt: Prompt) -> Reference:
        return self.many([prompt])[0]

    def many(self, prompts: Sequence[Prompt]) -> list[Reference]:
        """The references of `prompts`: from memory or disk, the missing ones decoded together."""
        keys = [self._key(prompt) for prompt in prompts]
        missing = {}
        for key, prompt in zip(keys, prompts):
            path = self.directory / f"{key}.safetensors"
            if key in self.cache:
                self.cache.move_to_end(key)
                continue
            if key in missing:
                continue
            if path.exists():
                stored = load_file(str(path))
                self._keep(key, Reference(stored["prompt_ids"].tolist(), stored["continuation"].tolist(),
                                          stored["features"].to(self.target.device, self.target.dtype)))
            else:
                missing[key] = prompt
        for key, ref in zip(missing, references_batch(self.target, list(missing.values()), self.max_new_tokens,
                                                      self.margin) if missing else []):
            self.directory.mkdir(parents=True, exist_ok=True)
            tensors = {"prompt_ids": torch.tensor(ref.prompt_ids), "continuation": torch.tensor(ref.continuation),
                       "features": ref.features.detach().cpu().contiguous()}
            atomic_write(self.directory / f"{key}.safetensors", lambda tmp: save_file(tensors, tmp))
            self._keep(key, ref)
        found = [self.cache[key] for key in keys]
        while len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return found

    def _keep(self, key: str, ref: Reference) -> None:
        self.cache[key] = ref
        self.cache.move_to_end(key)
