"""torch.Tensor <-> taps.v1.Tensor: raw little-endian bytes + dtype name + shape, exact round trip.

Target features and draft trees cross process boundaries on every decoding step, so the encoding is the tensor's
own memory (no numpy detour, no pickling): one copy each way. Every dtype, bfloat16 included, is sent as its raw
bytes (a uint8 view of the storage); the same bytes a uint16 view of bfloat16 would give. Messages come from other
processes, so `from_proto` validates the dtype name and the byte count before touching the data.
"""

from __future__ import annotations

import math
import sys

import torch

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
    raise ImportError("services.tensors assumes a little-endian host (the wire format is little-endian)")


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
