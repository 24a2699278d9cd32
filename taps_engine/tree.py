"""Draft trees: their shape settings, node arrays, the verification mask, and the ways to merge several drafters'
trees.

Nodes are stored in topological order (a parent always precedes its children); parent -1 is the root, the last
committed token, which is not itself a node.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from pydantic import ConfigDict


@dataclass(frozen=True)
class TreeSettings:
    """EAGLE-2 dynamic tree shape: nodes verified per step (root included), expansion depth, branching.

    `depth` counts the expansions after the root's top-k, as in EAGLE-2's code, so the deepest draft token sits at
    depth + 1 and the paper's "60/5/10" means here what it means there.

    The one tree type of the project: engine, CLI options, serving and evaluation configs (pydantic validates it
    as a config field, unknown keys included) all use it.
    """

    __pydantic_config__ = ConfigDict(extra="forbid")

    total_tokens: int = 60
    depth: int = 5
    top_k: int = 10
    # cost-aware: the three numbers above are maxima; each step verifies the number of ranked nodes that maximizes
    # the expected tokens per second on this machine (taps_engine/economics.py)
    cost_aware: bool = False
    # drafting stops expanding once the best frontier node's confidence falls below this (0: never)
    stop_below: float = 0.0

    def __post_init__(self) -> None:
        if self.total_tokens < 2:
            raise ValueError(f"total_tokens must be >= 2 (root plus at least one draft), got {self.total_tokens}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.stop_below <= 1.0:
            raise ValueError(f"stop_below must lie in [0, 1], got {self.stop_below}")

    @property
    def label(self) -> str:
        """`TOTAL/DEPTH/TOPK`, with `+cost` for a cost-aware tree."""
        return f"{self.total_tokens}/{self.depth}/{self.top_k}" + ("+cost" if self.cost_aware else "")

    @classmethod
    def parse(cls, spec: str) -> "TreeSettings":
        """`TOTAL/DEPTH/TOPK`, optionally followed by `+cost` (e.g. 60/5/8+cost)."""
        body, plus, mode = spec.partition("+")
        parts = body.split("/")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts) or (plus and mode != "cost"):
            raise ValueError(f"a tree must look like TOTAL/DEPTH/TOPK or TOTAL/DEPTH/TOPK+cost, got {spec!r}")
        return cls(*(int(p) for p in parts), cost_aware=bool(plus))

    @property
    def max_nodes(self) -> int:
        return self.total_tokens - 1


PAPER_TREE = TreeSettings(60, 5, 10)
# Measured on CPUs (README, results/engine): a 16-node tree costs 1.15-1.9x one token, 60 nodes about 3x; and
# every depth is one more drafting pass through the LM head.
CPU_TREE = TreeSettings(16, 3, 4)
# What `make run` (`taps demo`) and the service draft on a CPU: at most 32/4/4, pruned at each step to the nodes
# whose expected acceptance pays for their verification on this machine. Under sticky routing it ran ahead of
# CPU_TREE on both CPUs measured (results/engine/README.md, "Which tree `make run` uses"), and through the service
# probe ran 1.19-1.22x plain decoding with it against level with 16/4/4 (results/serving/README.md). Not the default
# elsewhere: τ tables need a tree that does not depend on the machine's timing.
SPEED_CPU_TREE = TreeSettings(32, 4, 4, cost_aware=True)


def default_tree(device: torch.device | str) -> TreeSettings:
    """The tree a device affords: the paper's on accelerators, where verifying 60 nodes costs about one token;
    a small one on CPUs, where verify cost grows with the node count."""
    return CPU_TREE if torch.device(device).type == "cpu" else PAPER_TREE


def speed_tree(device: torch.device | str) -> TreeSettings:
    """The tree that decodes fastest where it was measured (`make run`, the service): the cost-aware one on CPUs,
    the paper's on accelerators (cost-aware trees were not measured on a GPU)."""
    return SPEED_CPU_TREE if torch.device(device).type == "cpu" else PAPER_TREE


@dataclass
class DraftTree:
    tokens: torch.Tensor     # (N,) long
    parents: torch.Tensor    # (N,) long, -1 = root
    depths: torch.Tensor     # (N,) long, 1 = child of the root
    scores: torch.Tensor     # (N,) float, cumulative draft log-prob: confidence = exp(score)
    entropies: torch.Tensor  # (N,) float, entropy of the draft distribution the node was picked from
    sources: torch.Tensor    # (N,) long, index of the drafter that proposed the node

    def __len__(self) -> int:
        return int(self.tokens.numel())

    @classmethod
    def empty(cls) -> "DraftTree":
        long, flt = torch.zeros(0, dtype=torch.long), torch.zeros(0)
        return cls(long, long, long, flt, flt, long)

    @property
    def confidences(self) -> torch.Tensor:
        return self.scores.exp()

    @property
    def max_depth(self) -> int:
        return int(self.depths.max()) if len(self) else 0

    def _arrays(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, keep: torch.Tensor) -> "DraftTree":
        """Sub-tree of the nodes `keep` (ascending, closed under parents), parents re-indexed."""
        keep = keep.sort().values
        remap = torch.full((len(self) + 1,), -1, dtype=torch.long)
        remap[keep + 1] = torch.arange(keep.numel())
        arrays = {k: v[keep] for k, v in self._arrays().items()}
        arrays["parents"] = remap[arrays["parents"] + 1]
        return DraftTree(**arrays)

    def top(self, n: int) -> "DraftTree":
        """The `n` best nodes by score; a stable sort keeps parents ahead of equally scored children."""
        if len(self) <= n:
            return self
        order = torch.sort(-self.scores, stable=True).indices
        return self.select(order[:n])

    def ancestor_mask(self) -> torch.Tensor:
        """(N+1, N+1) bool with the root at index 0: row i may attend to column j iff j is i or an ancestor.

        Built one depth level at a time (a node's row is its parent's row plus itself), not node by node."""
        n = len(self)
        mask = torch.eye(n + 1, dtype=torch.bool)
        mask[:, 0] = True
        for depth in range(2, self.max_depth + 1):
            rows = torch.nonzero(self.depths == depth).flatten() + 1
            mask[rows] |= mask[self.parents[rows - 1] + 1]
        return mask

    def children(self) -> list[list[int]]:
        """Children of the root (entry 0) and of node i (entry i+1), best score first."""
        kids: list[list[int]] = [[] for _ in range(len(self) + 1)]
        for i in torch.sort(-self.scores, stable=True).indices.tolist():
            kids[int(self.parents[i]) + 1].append(i)
        return kids


def concat(trees: list[DraftTree]) -> DraftTree:
    """The paper's merge: all trees under one shared root, no de-duplication, every tree keeps its budget."""
    parts, offset = [], 0
    for tree in trees:
        arrays = tree._arrays()
        arrays["parents"] = torch.where(tree.parents >= 0, tree.parents + offset, tree.parents)
        parts.append(arrays)
        offset += len(tree)
    if not parts:
        return DraftTree.empty()
    return DraftTree(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})


def trie(trees: list[DraftTree]) -> DraftTree:
    """Merge identical token paths (as SpecInfer's token tree) keeping the best-scoring copy's statistics."""
    merged = concat(trees)
    index: dict[tuple[int, int], int] = {}
    rep: list[int] = []  # for each merged node, the concat node whose stats it carries
    new_id = torch.empty(len(merged), dtype=torch.long)
    for i, (tok, par) in enumerate(zip(merged.tokens.tolist(), merged.parents.tolist())):
        key = (int(new_id[par]) if par >= 0 else -1, tok)
        j = index.get(key)
        if j is None:
            j = index[key] = len(rep)
            rep.append(i)
        elif merged.scores[i] > merged.scores[rep[j]]:
            rep[j] = i
        new_id[i] = j
    picked = torch.tensor(rep, dtype=torch.long)
    arrays = {k: v[picked] for k, v in merged._arrays().items()}
    parents = merged.parents[picked]
    arrays["parents"] = torch.where(parents >= 0, new_id[parents.clamp(min=0)], parents)
    return DraftTree(**arrays)


def budget(trees: list[DraftTree], n_nodes: int) -> DraftTree:
    """De-duplicated union reranked by confidence down to one tree's node budget (same verify cost)."""
    return trie(trees).top(n_nodes)
