"""In-process proposer: one draft head with its own KV cache, kept in step with the committed tokens.

The head consumes pairs (target feature at position t, token at t+1). After every verification the decoder hands
each drafter the newly committed tokens with the target features before them; pairs are processed lazily, in one
forward, the next time the drafter drafts, so a drafter that is not consulted costs nothing.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from transformers import DynamicCache

from .attention import output_logits
from .head import DraftHead
from .kvcache import keep_positions
from .target import Target
from .tree import DraftTree, TreeSettings


class DrafterUnavailable(RuntimeError):
    """A drafter (typically a remote one) failed: the decoding loop drops it and carries on without it."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"drafter {name!r} unavailable: {reason}")
        self.name = name


class Proposer(Protocol):
    """What the decoding loop needs from a drafter, in-process or remote."""

    name: str

    def reset(self) -> None: ...

    def extend(self, tokens: Sequence[int], features: torch.Tensor) -> None: ...

    def propose(self, settings: TreeSettings) -> DraftTree: ...

    def prompt_agreement(self) -> float: ...


@runtime_checkable
class Recoverable(Proposer, Protocol):
    """A proposer that can come back after failing (a remote drafter whose replica restarted): the loop asks each
    dropped one at every step and takes it back once it answers again."""

    def recovered(self) -> bool: ...

    def rejoin(self, tokens: Sequence[int]) -> None:
        """Start over from the committed pairs' tokens alone (their features are the proposer's to fetch)."""


def _entropy(logp: torch.Tensor) -> torch.Tensor:
    return -(logp.exp() * logp).sum(-1)


class Drafter:
    def __init__(self, name: str, head: DraftHead, target: Target) -> None:
        if head.config.hidden_size != target.config.hidden_size:
            raise ValueError(f"drafter {name!r}: head hidden size {head.config.hidden_size} does not match the "
                             f"target's {target.config.hidden_size}")
        self.name = name
        self.head = head
        self.embed = target.model.get_input_embeddings()
        lm_head = target.model.get_output_embeddings()
        self.vocab = head.draft_vocab                # target ids drafted from; None: all of them
        self.lm_weight = lm_head.weight if self.vocab is None else lm_head.weight[self.vocab].contiguous()
        self.lm_bias = None if lm_head.bias is None else (lm_head.bias if self.vocab is None
                                                          else lm_head.bias[self.vocab])
        self.device = target.device
        self.reset()

    def reset(self) -> None:
        self.cache = DynamicCache(config=self.head.config)
        self.processed = 0
        self.pending_tokens: list[int] = []
        self.pending_features: list[torch.Tensor] = []
        self.root_hidden: torch.Tensor | None = None

    def extend(self, tokens: Sequence[int], features: torch.Tensor) -> None:
        """Record committed `tokens` and the target features at the positions just before each of them."""
        if len(tokens) != features.shape[0]:
            raise ValueError(f"{len(tokens)} tokens but {features.shape[0]} features")
        self.pending_tokens.extend(int(t) for t in tokens)
        self.pending_features.append(features)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Draft logits over the draft vocabulary (index i is target token `_target_ids(i)`)."""
        return output_logits(self.head.config, torch.nn.functional.linear(hidden, self.lm_weight, self.lm_bias).float())

    def _target_ids(self, index: torch.Tensor) -> torch.Tensor:
        return index if self.vocab is None else self.vocab[index]

    @torch.no_grad()
    def _catch_up(self) -> torch.Tensor:
        """Run the head over pending pairs; returns their predicted features (T, H)."""
        if not self.pending_tokens:
            return self.root_hidden[None]
        tokens = torch.tensor(self.pending_tokens, device=self.device)[None]
        features = torch.cat(self.pending_features)[None].to(self.device)
        positions = torch.arange(self.processed, self.processed + tokens.shape[1], device=self.device)[None]
        hidden = self.head(self.embed(tokens), features, positions, cache=self.cache)[0]
        self.processed += tokens.shape[1]
        self.pending_tokens, self.pending_features = [], []
        self.root_hidden = hidden[-1]
        return hidden

    @torch.no_grad()
    def prompt_agreement(self) -> float:
        """Top-1 agreement of the head's predictions with the committed tokens it has not yet seen (the prompt).

        Used by the sticky policy to pick a drafter before the first step: one head forward, no target work.
        """
        targets = self.pending_tokens[1:]
        hidden = self._catch_up()
        if not targets:
            return 0.0
        predicted = self._target_ids(self._logits(hidden[:-1]).argmax(-1)).tolist()
        return sum(p == t for p, t in zip(predicted, targets)) / len(targets)

    @torch.no_grad()
    def propose(self, settings: TreeSettings) -> DraftTree:
        """EAGLE-2 dynamic tree: the root's top-k, then `depth` expansions of the global top-k frontier (so the
        deepest draft sits at depth + 1, as in EAGLE-2's code); keep the best nodes overall."""
        root_hidden = self._catch_up()[-1]
        base = self.processed  # cached pairs; the root pair sits at position base - 1
        logp = torch.log_softmax(self._logits(root_hidden[None]), -1)
        k = min(settings.top_k, logp.shape[-1])
        top_lp, top_tok = logp.topk(k, dim=-1)
        top_tok = self._target_ids(top_tok)
        tokens, parents, scores = [top_tok[0]], [torch.full((k,), -1)], [top_lp[0].cpu()]
        entropies, depths = [_entropy(logp).expand(k).cpu()], [torch.ones(k, dtype=torch.long)]
        frontier = torch.arange(k)          # candidate ids being expanded next
        frontier_hidden = root_hidden.expand(k, -1)
        fed_ancestors = torch.zeros(0, 0, dtype=torch.bool)  # among fed draft nodes: row sees column
        fed_index: dict[int, int] = {}      # candidate id -> index among fed nodes
        n_candidates = k
        for depth in range(2, settings.depth + 2):
            if settings.stop_below and float(torch.cat(scores)[frontier].max().exp()) < settings.stop_below:
                break   # no frontier node is likely enough to pay for another drafting pass
            n_fed = fed_ancestors.shape[0]
            rows = torch.zeros(k, n_fed + k, dtype=torch.bool)
            all_parents = torch.cat(parents)
            for r, cand in enumerate(frontier.tolist()):
                parent = int(all_parents[cand])
                if parent >= 0:
                    rows[r, :n_fed] = fed_ancestors[fed_index[parent]]
                rows[r, n_fed + r] = True
                fed_index[cand] = n_fed + r
            fed_ancestors = torch.cat([torch.cat([fed_ancestors, torch.zeros(n_fed, k, dtype=torch.bool)], 1),
                                       rows])
            mask = torch.cat([torch.ones(k, base, dtype=torch.bool), rows], 1)[None, None].to(self.device)
            all_tokens = torch.cat(tokens)
            positions = torch.full((1, k), base + depth - 2, device=self.device)
            hidden = self.head(self.embed(all_tokens[frontier].to(self.device))[None], frontier_hidden[None],
                               positions, attention_mask=mask, cache=self.cache)[0]
            child_logp = torch.log_softmax(self._logits(hidden), -1)
            lp, tok = child_logp.topk(k, dim=-1)                                    # (k, k)
            tok = self._target_ids(tok)
            cand_scores = (torch.cat(scores)[frontier][:, None] + lp.cpu()).flatten()
            tokens.append(tok.flatten())
            parents.append(frontier.repeat_interleave(k))
            scores.append(cand_scores)
            entropies.append(_entropy(child_logp).cpu().repeat_interleave(k))
            depths.append(torch.full((k * k,), depth, dtype=torch.long))
            best = cand_scores.topk(k).indices
            frontier = n_candidates + best
            frontier_hidden = hidden[best // k]
            n_candidates += k * k
        keep_positions(self.cache, torch.arange(base, device=self.device))
        n = n_candidates
        tree = DraftTree(tokens=torch.cat(tokens).cpu(), parents=torch.cat(parents), depths=torch.cat(depths),
                         scores=torch.cat(scores), entropies=torch.cat(entropies),
                         sources=torch.zeros(n, dtype=torch.long))
        return tree.top(settings.max_nodes)
