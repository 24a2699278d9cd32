"""Engine values <-> protobuf messages, exact round trips: tensors, draft trees and tree settings.

Tensors are raw little-endian bytes + dtype name + shape. Target features and draft trees cross process boundaries on every decoding step, so the encoding is the tensor's
own memory (no numpy detour, no pickling): one copy each way. Every dtype, bfloat16 included, is sent as its raw
bytes (a uint8 view of the storage); the same bytes a uint16 view of bfloat16 would give. Messages come from other
processes, so `from_proto` validates the dtype name and the byte count before touching the data.

A tree arriving from another process is checked before the verifier builds an attention mask from it: equal
1-D lengths, integer index arrays, parents pointing at earlier nodes (topological order) and depths consistent
with parents. A malformed tree raises ValueError (the servicer turns it into INVALID_ARGUMENT) instead of
producing a wrong mask, which would silently break losslessness.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, fields
from typing import Iterable

import torch

from taps_engine.tree import DraftTree, TreeSettings

from .protos_gen.taps.v1 import taps_pb2 as pb

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}
NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("services.codec assumes a little-endian host (the wire format is little-endian)")


def to_proto(tensor: torch.Tensor) -> pb.Tensor:
    """Encode a tensor of a supported dtype on any device (copied to CPU)."""
    name = NAMES.get(tensor.dtype)
    if name is None:
        raise ValueError(f"unsupported tensor dtype {tensor.dtype}; supported: {', '.join(DTYPES)}")
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return pb.Tensor(data=data, dtype=name, shape=list(tensor.shape))


def from_proto(msg: pb.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Decode a Tensor message; ValueError when its dtype is unknown or its bytes do not match its shape."""
    dtype = DTYPES.get(msg.dtype)
    if dtype is None:
        raise ValueError(f"unknown tensor dtype {msg.dtype!r}; expected one of {', '.join(DTYPES)}")
    shape = tuple(int(s) for s in msg.shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"tensor shape {list(shape)} has a negative dimension")
    itemsize = torch.empty((), dtype=dtype).element_size()
    expected = math.prod(shape) * itemsize
    if len(msg.data) != expected:
        raise ValueError(f"tensor data has {len(msg.data)} bytes but shape {list(shape)} of {msg.dtype} needs "
                         f"{expected}")
    if expected == 0:
        out = torch.empty(shape, dtype=dtype)
    else:
        raw = torch.frombuffer(bytearray(msg.data), dtype=torch.uint8)  # the bytearray copy is writable
        if dtype == torch.bool and bool((raw > 1).any()):
            raise ValueError("bool tensor data holds bytes other than 0 and 1")
        out = raw.view(dtype).reshape(shape)
    return out.to(device) if device is not None else out


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
    return pb.TreeSettings(**asdict(settings))


def settings_from_proto(msg: pb.TreeSettings) -> TreeSettings:
    """ValueError (from TreeSettings) for out-of-range values, including an unset (zero) message."""
    return TreeSettings(**{f.name: getattr(msg, f.name) for f in fields(TreeSettings)})


def asks_to_proto(asks: Iterable[tuple[str, TreeSettings]]) -> list[pb.DraftAsk]:
    """(co-located drafter, tree settings) pairs as the Verify / Draft requests carry them."""
    return [pb.DraftAsk(drafter=name, tree=settings_to_proto(settings)) for name, settings in asks]


def asks_from_proto(messages: Iterable[pb.DraftAsk]) -> list[tuple[str, TreeSettings]]:
    return [(ask.drafter, settings_from_proto(ask.tree)) for ask in messages]
