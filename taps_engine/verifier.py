"""Target-side verification: one forward over the packed tree with an ancestor mask, then KV compaction."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from transformers import DynamicCache

from .acceptance import SamplingParams, accept_greedy, accept_sampling
from .attention import has_sliding_layers, model_mask, output_logits
from .kvcache import keep_positions
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


class TargetVerifier:
    """Holds the target's KV cache for one sequence: every committed token except the pending root."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.model = target.model
        self.sliding = has_sliding_layers(self.model.config)
        self.cache = DynamicCache()  # every layer keeps every position: windows are in the masks (attention.py)
        self._prefix = 0  # cache length before the tree last verified

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
                 logits_from: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.get_decoder()(input_ids=ids, position_ids=positions, attention_mask=mask,
                                       cache=self.cache, use_cache=True)
        features = out.last_hidden_state[0]
        logits = output_logits(self.model.config, self.model.get_output_embeddings()(features[logits_from:]).float())
        return features, logits

    def _mask(self, visible: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor):
        device = self.target.device
        return model_mask(self.model.config, visible.to(device), q_pos.to(device), k_pos.to(device), self.model.dtype)

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the prompt's features (T, H) and the next-token logits (V,)."""
        self.cache = DynamicCache()
        device = self.target.device
        input_ids = torch.tensor([list(ids)], device=device)
        positions = torch.arange(len(ids))
        # without sliding layers the model's own causal mask is the same; with them, the windows must be given
        mask = self._mask(torch.ones(len(ids), len(ids), dtype=torch.bool).tril(), positions, positions) \
            if self.sliding else None
        features, logits = self._forward(input_ids, positions[None].to(device), mask, logits_from=len(ids) - 1)
        return features, logits[0]

    @torch.no_grad()
    def verify(self, root: int, tree: DraftTree) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (1+N, V) and features (1+N, H) for the root followed by the tree's nodes."""
        device = self.target.device
        prefix = self._prefix = self.cache.get_seq_length()
        ids = torch.cat([torch.tensor([root]), tree.tokens])[None].to(device)
        depths = torch.cat([torch.zeros(1, dtype=torch.long), tree.depths])
        positions = prefix + depths
        visible = torch.cat([torch.ones(len(tree) + 1, prefix, dtype=torch.bool), tree.ancestor_mask()], 1)
        mask = self._mask(visible, positions, torch.cat([torch.arange(prefix), positions]))
        features, logits = self._forward(ids, positions[None].to(device), mask, logits_from=0)
        return logits, features

    @torch.no_grad()
    def step(self, root: int, tree: DraftTree, params: SamplingParams,
             generator: torch.Generator) -> tuple[list[int], int, torch.Tensor]:
        """Verify, accept losslessly, keep the accepted entries: (path of node indices, bonus token, features of
        the root and the accepted nodes)."""
        logits, features = self.verify(root, tree)
        if params.greedy:
            path, bonus = accept_greedy(logits, tree)
        else:
            path, bonus = accept_sampling(logits, tree, params, generator)
        rows = [0] + [i + 1 for i in path]
        self.commit(rows)
        return path, bonus, features[rows]

    def commit(self, path: Sequence[int]) -> None:
        """Keep the committed prefix plus the verified entries `path` (0 = root, i+1 = node i)."""
        keep = torch.cat([torch.arange(self._prefix), self._prefix + torch.tensor(list(path), dtype=torch.long)])
        keep_positions(self.cache, keep)
