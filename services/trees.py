"""DraftTree and TreeSettings <-> protobuf, exact round trip.

A tree arriving from another process is checked before the verifier builds an attention mask from it: equal
1-D lengths, integer index arrays, parents pointing at earlier nodes (topological order) and depths consistent
with parents. A malformed tree raises ValueError (the servicer turns it into INVALID_ARGUMENT) instead of
producing a wrong mask, which would silently break losslessness.
"""

from __future__ import annotations

from dataclasses import fields

import torch

from taps_engine.drafter import TreeSettings
from taps_engine.tree import DraftTree

from .protos_gen.taps.v1 import taps_pb2 as pb
from .tensors import from_proto, to_proto

_FIELDS = [f.name for f in fields(DraftTree)]
_INDEX_FIELDS = ("tokens", "parents", "depths", "sources")


def tree_to_proto(tree: DraftTree) -> pb.DraftTree:
    return pb.DraftTree(**{name: to_proto(getattr(tree, name)) for name in _FIELDS})


def tree_from_proto(msg: pb.DraftTree) -> DraftTree:
    """Decode and validate a tree (on CPU, where the engine keeps trees)."""
    missing = [name for name in _FIELDS if not msg.HasField(name)]
    if missing:
        raise ValueError(f"draft tree lacks {', '.join(missing)}")
    arrays = {name: from_proto(getattr(msg, name)) for name in _FIELDS}
    for name, array in arrays.items():
        if array.dim() != 1:
            raise ValueError(f"draft tree {name} must be 1-D, got shape {list(array.shape)}")
        if name in _INDEX_FIELDS and array.dtype != torch.int64:
            raise ValueError(f"draft tree {name} must be int64, got {array.dtype}")
        if name not in _INDEX_FIELDS and not array.dtype.is_floating_point:
            raise ValueError(f"draft tree {name} must be floating point, got {array.dtype}")
    lengths = {name: a.numel() for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"draft tree arrays differ in length: {lengths}")
    tree = DraftTree(**arrays)
    _check_structure(tree)
    return tree


def _check_structure(tree: DraftTree) -> None:
    n = len(tree)
    if n == 0:
        return
    parents, depths = tree.parents, tree.depths
    if bool((parents < -1).any()) or bool((parents >= torch.arange(n)).any()):
        raise ValueError("draft tree parents must be -1 (the root) or the index of an earlier node")
    expected = torch.where(parents < 0, torch.ones_like(depths), depths[parents.clamp(min=0)] + 1)
    if not torch.equal(depths, expected):
        raise ValueError("draft tree depths must be 1 under the root and parent depth + 1 elsewhere")
    if bool((tree.tokens < 0).any()) or bool((tree.sources < 0).any()):
        raise ValueError("draft tree tokens and sources must be non-negative")


def settings_to_proto(settings: TreeSettings) -> pb.TreeSettings:
    return pb.TreeSettings(total_tokens=settings.total_tokens, depth=settings.depth, top_k=settings.top_k)


def settings_from_proto(msg: pb.TreeSettings) -> TreeSettings:
    """ValueError (from TreeSettings) for out-of-range values, including an unset (zero) message."""
    return TreeSettings(total_tokens=msg.total_tokens, depth=msg.depth, top_k=msg.top_k)
