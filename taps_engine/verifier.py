"""Target-side verification: one forward over the packed tree with an ancestor mask, then KV compaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from .acceptance import SamplingParams, accept_greedy, accept_sampling
from .attention import has_sliding_layers, model_mask, output_logits
from .padding import PADDED_TOKENS, budget_groups
from .slots import SlotCache
from .target import Target
from .tree import DraftTree


class Verifier(Protocol):
    """What the decoding loop needs from the target, in-process or remote.

    `step` verifies and accepts in one call, so a remote verifier ships back the accepted path and its features,
    never the (1+N, V) logits.
    """

    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def step(self, root: int, tree: DraftTree, params: SamplingParams,
             generator: torch.Generator) -> tuple[list[int], int, torch.Tensor]: ...


@dataclass
class PendingStep:
    """A verification a lock-step verifier (lockstep.py) defers: the decoding loop yields it, and the driver
    verifies the pending steps of all lanes in one forward and fills in `result` before resuming the loop."""

    verifier: "TargetVerifier"
    root: int
    tree: DraftTree
    params: SamplingParams
    generator: torch.Generator
    result: tuple[list[int], int, torch.Tensor] | None = None

    def call(self) -> tuple:
        """This step's arguments to `step_batch`."""
        return self.verifier, self.root, self.tree, self.params, self.generator


class TargetVerifier:
    """Holds the target's KV cache for one sequence: every committed token except the pending root.

    The entries live in one slot of a `SlotCache`; verifiers that share one can be verified in one forward
    (`step_batch`), each with its own tree, mask and acceptance.
    """

    def __init__(self, target: Target, cache: SlotCache | None = None) -> None:
        self.target = target
        self.model = target.model
        self.sliding = has_sliding_layers(self.model.config)
        self.cache = cache if cache is not None else SlotCache.for_model(self.model.config)
        self.slot = self.cache.allocate()

    @property
    def length(self) -> int:
        """Committed entries in the cache."""
        return self.cache.lengths[self.slot]

    def release(self) -> None:
        self.cache.release(self.slot)

    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the prompt's features (T, H) and the next-token logits (V,)."""
        return prefill_batch([self], [ids])[0]

    def verify(self, root: int, tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (1+N, V) and features (1+N, H) for the root followed by the tree's nodes."""
        return verify_batch([self], [root], [tree])[0]

    def step(self, root: int, tree: DraftTree, params: SamplingParams,
             generator: torch.Generator) -> tuple[list[int], int, torch.Tensor]:
        """Verify, accept losslessly, keep the accepted entries: (path of node indices, bonus token, features of
        the root and the accepted nodes)."""
        return step_batch([self], [root], [tree], [params], [generator])[0]

    @torch.inference_mode()
    def commit(self, path: Sequence[int]) -> None:
        """Keep the committed prefix plus the verified entries `path` (0 = root, i+1 = node i)."""
        self.cache.keep(self.slot, path)


def _mask(model, visible: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
    device = model.device
    return model_mask(model.config, visible.to(device), q_pos.to(device), k_pos.to(device), model.dtype)


def _forward(model, cache: SlotCache, slots: list[int], ids: torch.Tensor, positions: torch.Tensor,
             mask) -> torch.Tensor:
    """Features (B, Q, H) of one decoder forward that extends `slots` by the Q entries of each row."""
    cache.prepare(slots, ids.shape[1])
    device = model.device
    out = model.get_decoder()(input_ids=ids.to(device), position_ids=positions.to(device), attention_mask=mask,
                              cache=cache, use_cache=True)
    return out.last_hidden_state


def _logits(model, features: torch.Tensor) -> torch.Tensor:
    return output_logits(model.config, model.get_output_embeddings()(features).float())


@torch.inference_mode()
def prefill_batch(verifiers: Sequence[TargetVerifier], prompts: Sequence[Sequence[int]],
                  padded_tokens: int = PADDED_TOKENS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`TargetVerifier.prefill` for verifiers sharing a SlotCache, prompts of similar length in one forward.

    One prompt per forward ran at 462 tok/s against about 1,100 for batched feature forwards (SmolLM2-135M, bf16,
    2 cores). Rows are right-padded: under causal attention no real position reads a padded one, and each slot
    commits only its own prompt's entries (the padding's are overwritten by the next forward).
    """
    cache = verifiers[0].cache
    if any(v.cache is not cache for v in verifiers):
        raise ValueError("verifiers prefilled together must share one SlotCache")
    out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * len(prompts)
    for group in budget_groups([len(p) for p in prompts], padded_tokens):
        rows = [verifiers[i] for i in group]
        lengths = [len(prompts[i]) for i in group]
        width = lengths[-1]
        ids = torch.zeros(len(group), width, dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, :lengths[row]] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
        for verifier in rows:
            cache.truncate(verifier.slot, 0)
        positions = torch.arange(width).expand(len(group), -1)
        # without sliding layers the model's own causal mask is the same; with them, the windows must be given
        mask = _mask(rows[0].model, torch.ones(len(group), width, width, dtype=torch.bool).tril(), positions,
                     positions) if rows[0].sliding else None
        features = _forward(rows[0].model, cache, [v.slot for v in rows], ids, positions, mask)
        last = torch.stack([features[row, n - 1] for row, n in enumerate(lengths)])
        for row, (i, verifier, n, logits) in enumerate(zip(group, rows, lengths, _logits(rows[0].model, last))):
            cache.keep(verifier.slot, range(n))
            out[i] = features[row, :n], logits
    return out


@torch.inference_mode()   # the cache's tensors are inference tensors: every in-place write runs in the mode
def verify_batch(verifiers: Sequence[TargetVerifier], roots: Sequence[int],
                 trees: Sequence[DraftTree]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logits (1+N, V) and features (1+N, H) of each verifier's root and tree, from one forward.

    The verifiers share one SlotCache. Rows are padded to the largest tree; a padding query sees one key and its
    output is dropped, so each sequence's result does not depend on the others' contents (only on the padded shape,
    which changes rounding in bf16 as any shape does).
    """
    model, cache = verifiers[0].model, verifiers[0].cache
    if any(v.cache is not cache for v in verifiers):
        raise ValueError("verifiers batched together must share one SlotCache")
    sizes = [len(tree) + 1 for tree in trees]
    lengths = [v.length for v in verifiers]
    queries, keys = max(sizes), max(lengths) + max(sizes)
    ids = torch.zeros(len(trees), queries, dtype=torch.long)
    q_pos = torch.zeros(len(trees), queries, dtype=torch.long)
    k_pos = torch.arange(keys).repeat(len(trees), 1)
    visible = torch.zeros(len(trees), queries, keys, dtype=torch.bool)
    visible[:, :, 0] = True
    for b, (root, tree, size, length) in enumerate(zip(roots, trees, sizes, lengths)):
        positions = length + torch.cat([torch.zeros(1, dtype=torch.long), tree.depths])
        ids[b, :size] = torch.cat([torch.tensor([root]), tree.tokens])
        q_pos[b, :size] = k_pos[b, length:length + size] = positions
        visible[b, :size, :length] = True
        visible[b, :size, length:length + size] = tree.ancestor_mask()
    features = _forward(model, cache, [v.slot for v in verifiers], ids, q_pos, _mask(model, visible, q_pos, k_pos))
    kept = [features[b, :size] for b, size in enumerate(sizes)]
    logits = _logits(model, torch.cat(kept)).split(sizes)
    return list(zip(logits, kept))


def step_batch(verifiers: Sequence[TargetVerifier], roots: Sequence[int], trees: Sequence[DraftTree],
               params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
               ) -> list[tuple[list[int], int, torch.Tensor]]:
    """`TargetVerifier.step` for verifiers sharing a SlotCache, with one target forward."""
    results = []
    for verifier, tree, param, generator, (logits, features) in zip(
            verifiers, trees, params, generators, verify_batch(verifiers, roots, trees)):
        if param.greedy:
            path, bonus = accept_greedy(logits, tree)
        else:
            path, bonus = accept_sampling(logits, tree, param, generator)
        rows = [0] + [i + 1 for i in path]
        verifier.commit(rows)
        results.append((path, bonus, features[rows]))
    return results
