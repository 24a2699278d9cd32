"""In-process proposer: one draft head with its own KV cache, kept in step with the committed tokens.

The head consumes pairs (target feature at position t, token at t+1). After every verification the decoder hands
each drafter the newly committed tokens with the target features before them; pairs are processed lazily, in one
forward, the next time the drafter drafts, so a drafter that is not consulted costs nothing.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

from .attention import output_logits
from .head import DraftHead
from .packing import PackedLinear, pack_linears
from .slots import SlotCache
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
    """A draft head and one sequence's state: its KV entries live in a slot of a `SlotCache`. Drafters of one
    head that share a cache draft together (`propose_batch`), one head forward per tree level for all of them."""

    def __init__(self, name: str, head: DraftHead, target: Target, cache: SlotCache | None = None) -> None:
        if head.config.hidden_size != target.config.hidden_size:
            raise ValueError(f"drafter {name!r}: head hidden size {head.config.hidden_size} does not match the "
                             f"target's {target.config.hidden_size}")
        self.name = name
        self.head = head
        self.embed = target.model.get_input_embeddings()
        self.vocab = head.draft_vocab                # target ids drafted from; None: all of them
        lm_head = target.model.get_output_embeddings()
        weight, bias = lm_head.weight.detach(), None if lm_head.bias is None else lm_head.bias.detach()
        if self.vocab is not None:
            weight, bias = weight[self.vocab].contiguous(), None if bias is None else bias[self.vocab]
        self.lm = PackedLinear(weight, bias)        # the draft vocabulary's rows of the target's LM head
        pack_linears(head)
        self.device = target.device
        self.cache = cache if cache is not None else SlotCache(num_layers=1)
        self.slot = self.cache.allocate()
        self.reset()

    def reset(self) -> None:
        self.cache.truncate(self.slot, 0)
        self.processed = 0
        self.pending_tokens: list[int] = []
        self.pending_features: list[torch.Tensor] = []
        self.root_hidden: torch.Tensor | None = None

    def release(self) -> None:
        self.cache.release(self.slot)

    @property
    def cached_pairs(self) -> int:
        """Pairs whose keys and values the head's cache holds."""
        return self.cache.lengths[self.slot]

    def extend(self, tokens: Sequence[int], features: torch.Tensor) -> None:
        """Record committed `tokens` and the target features at the positions just before each of them."""
        if len(tokens) != features.shape[0]:
            raise ValueError(f"{len(tokens)} tokens but {features.shape[0]} features")
        self.pending_tokens.extend(int(t) for t in tokens)
        self.pending_features.append(features)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Draft logits over the draft vocabulary (index i is target token `_target_ids(i)`)."""
        return output_logits(self.head.config, self.lm(hidden).float())

    def _target_ids(self, index: torch.Tensor) -> torch.Tensor:
        return index if self.vocab is None else self.vocab[index]

    def prompt_agreement(self) -> float:
        """Top-1 agreement of the head's predictions with the committed tokens it has not yet seen (the prompt).

        Used by the sticky policy to pick a drafter before the first step: one head forward, no target work.
        """
        targets = self.pending_tokens[1:]
        hidden = catch_up([self])[0]
        if not targets:
            return 0.0
        with torch.inference_mode():
            predicted = self._target_ids(self._logits(hidden[:-1]).argmax(-1)).tolist()
        return sum(p == t for p, t in zip(predicted, targets)) / len(targets)

    def propose(self, settings: TreeSettings) -> DraftTree:
        return propose_batch([self], [settings])[0]


def _head_pass(drafters: Sequence[Drafter], tokens: list[torch.Tensor], features: list[torch.Tensor],
               positions: list[torch.Tensor], visible: list[torch.Tensor]) -> list[torch.Tensor]:
    """One head forward extending each drafter's slot by its rows: `tokens` (n_b,), `features` (n_b, H),
    `positions` (n_b,), `visible` (n_b, slot length + n_b). Rows are padded to the longest; a padding row sees
    one key and its output is dropped. Returns each drafter's predicted features (n_b, H)."""
    first = drafters[0]
    sizes = [len(t) for t in tokens]
    width, lengths = max(sizes), [d.cached_pairs for d in drafters]
    keys = max(lengths) + width
    batch = len(drafters)
    ids = torch.zeros(batch, width, dtype=torch.long)
    feats = torch.zeros(batch, width, first.head.config.hidden_size, dtype=features[0].dtype, device=first.device)
    pos = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, 1, width, keys, dtype=torch.bool)
    mask[:, 0, :, 0] = True
    for b, (n, length) in enumerate(zip(sizes, lengths)):
        ids[b, :n], feats[b, :n], pos[b, :n] = tokens[b].cpu(), features[b], positions[b]
        mask[b, 0, :n, :length + n] = visible[b]
    first.cache.prepare([d.slot for d in drafters], width)
    hidden = first.head(first.embed(ids.to(first.device)), feats, pos.to(first.device),
                        attention_mask=mask.to(first.device), cache=first.cache)
    for d, n in zip(drafters, sizes):
        d.cache.keep(d.slot, range(n))
    return [hidden[b, :n] for b, n in enumerate(sizes)]


def _shared(drafters: Sequence[Drafter]) -> None:
    first = drafters[0]
    if any(d.cache is not first.cache or d.head is not first.head for d in drafters):
        raise ValueError("drafters batched together must share one head and one SlotCache")


@torch.inference_mode()   # the cache's tensors are inference tensors: every in-place write runs in the mode
def catch_up(drafters: Sequence[Drafter]) -> list[torch.Tensor]:
    """Run the head over each drafter's pending pairs in one forward; returns their predicted features (T_b, H)
    (the last one alone when nothing is pending)."""
    _shared(drafters)
    behind = [d for d in drafters if d.pending_tokens]
    if behind:
        sizes = [len(d.pending_tokens) for d in behind]
        hidden = _head_pass(
            behind, [torch.tensor(d.pending_tokens) for d in behind],
            [torch.cat(d.pending_features).to(d.device) for d in behind],
            [torch.arange(d.processed, d.processed + n) for d, n in zip(behind, sizes)],
            [torch.cat([torch.ones(n, d.processed, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril()], 1)
             for d, n in zip(behind, sizes)])
        for d, n, h in zip(behind, sizes, hidden):
            d.processed += n
            d.pending_tokens, d.pending_features = [], []
            d.root_hidden = h[-1]
    fresh = dict(zip(map(id, behind), hidden)) if behind else {}
    return [fresh.get(id(d), d.root_hidden[None] if d.root_hidden is not None else None) for d in drafters]


def _log_probs(drafter: Drafter, hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Draft log-probs of several drafters' rows (of one head) in one LM-head pass: that pass, not the decoder
    layer, is most of a drafting step's cost, and a CPU runs it over many rows for little more than over a few."""
    logp = torch.log_softmax(drafter._logits(torch.cat(list(hidden))), -1)
    return list(logp.split([h.shape[0] for h in hidden]))


class _Expansion:
    """One drafter's EAGLE-2 tree growing level by level: the root's top-k, then `depth` expansions of the global
    top-k frontier (so the deepest draft sits at depth + 1, as in EAGLE-2's code); the best nodes overall kept."""

    def __init__(self, drafter: Drafter, settings: TreeSettings, root_hidden: torch.Tensor,
                 logp: torch.Tensor) -> None:
        """`logp`: the root's draft log-probs (1, V)."""
        self.drafter, self.settings = drafter, settings
        self.base = drafter.processed  # cached pairs; the root pair sits at position base - 1
        k = self.k = min(settings.top_k, logp.shape[-1])
        top_lp, top_tok = logp.topk(k, dim=-1)
        self.tokens, self.parents = [drafter._target_ids(top_tok)[0]], [torch.full((k,), -1)]
        self.scores, self.entropies = [top_lp[0].cpu()], [_entropy(logp).expand(k).cpu()]
        self.depths = [torch.ones(k, dtype=torch.long)]
        self.frontier = torch.arange(k)          # candidate ids being expanded next
        self.frontier_hidden = root_hidden.expand(k, -1)
        self.fed_ancestors = torch.zeros(0, 0, dtype=torch.bool)  # among fed draft nodes: row sees column
        self.fed_index: dict[int, int] = {}      # candidate id -> index among fed nodes
        self.n_candidates = k
        self.depth = 1                           # depth of the deepest candidates

    def wants_pass(self) -> bool:
        if self.depth > self.settings.depth:
            return False
        stop = self.settings.stop_below   # no frontier node likely enough to pay for another drafting pass
        return not (stop and float(torch.cat(self.scores)[self.frontier].max().exp()) < stop)

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frontier's tokens, features, positions and visibility (over the slot) for the next head pass."""
        k, n_fed = self.k, self.fed_ancestors.shape[0]
        rows = torch.zeros(k, n_fed + k, dtype=torch.bool)
        all_parents = torch.cat(self.parents)
        for r, cand in enumerate(self.frontier.tolist()):
            parent = int(all_parents[cand])
            if parent >= 0:
                rows[r, :n_fed] = self.fed_ancestors[self.fed_index[parent]]
            rows[r, n_fed + r] = True
            self.fed_index[cand] = n_fed + r
        self.fed_ancestors = torch.cat([torch.cat([self.fed_ancestors, torch.zeros(n_fed, k, dtype=torch.bool)], 1),
                                        rows])
        visible = torch.cat([torch.ones(k, self.base, dtype=torch.bool), rows], 1)
        positions = torch.full((k,), self.base + self.depth - 1)
        return torch.cat(self.tokens)[self.frontier], self.frontier_hidden, positions, visible

    def absorb(self, hidden: torch.Tensor, child_logp: torch.Tensor) -> None:
        """The head's predicted features for the frontier and their draft log-probs: its children become
        candidates, the best k the next frontier."""
        k, drafter = self.k, self.drafter
        self.depth += 1
        lp, tok = child_logp.topk(k, dim=-1)                                    # (k, k)
        cand_scores = (torch.cat(self.scores)[self.frontier][:, None] + lp.cpu()).flatten()
        self.tokens.append(drafter._target_ids(tok).flatten())
        self.parents.append(self.frontier.repeat_interleave(k))
        self.scores.append(cand_scores)
        self.entropies.append(_entropy(child_logp).cpu().repeat_interleave(k))
        self.depths.append(torch.full((k * k,), self.depth, dtype=torch.long))
        best = cand_scores.topk(k).indices
        self.frontier = self.n_candidates + best
        self.frontier_hidden = hidden[best // k]
        self.n_candidates += k * k

    def tree(self) -> DraftTree:
        tree = DraftTree(tokens=torch.cat(self.tokens).cpu(), parents=torch.cat(self.parents),
                         depths=torch.cat(self.depths), scores=torch.cat(self.scores),
                         entropies=torch.cat(self.entropies),
                         sources=torch.zeros(self.n_candidates, dtype=torch.long))
        return tree.top(self.settings.max_nodes)


@torch.inference_mode()
def propose_batch(drafters: Sequence[Drafter], settings: Sequence[TreeSettings]) -> list[DraftTree]:
    """Each drafter's EAGLE-2 dynamic tree, drafted together: one head forward for the pending pairs of all,
    then one per tree level for those still expanding. The drafted levels' cache entries are dropped after."""
    roots = [h[-1:] for h in catch_up(drafters)]
    expansions = [_Expansion(d, s, h[0], logp) for d, s, h, logp in zip(drafters, settings, roots,
                                                                         _log_probs(drafters[0], roots))]
    active = [e for e in expansions if e.wants_pass()]
    while active:
        tokens, features, positions, visible = zip(*(e.inputs() for e in active))
        hidden = _head_pass([e.drafter for e in active], list(tokens), list(features), list(positions),
                            list(visible))
        for e, h, logp in zip(active, hidden, _log_probs(drafters[0], hidden)):
            e.absorb(h, logp)
        active = [e for e in active if e.wants_pass()]
    for e in expansions:
        e.drafter.cache.truncate(e.drafter.slot, e.base)
    return [e.tree() for e in expansions]
