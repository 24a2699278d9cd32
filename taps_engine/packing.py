"""fp32 linear layers on CPU through oneDNN with weights packed once, for the few rows a decoding step has.

PyTorch's fp32 `linear` on CPU calls MKL's sgemm, which is slow for the 1 to 64 rows a decoding step multiplies:
on a 2-core AMD EPYC (AVX2) the SmolLM2 LM head took 8.9 ms for one row, 19 ms for two and 24 ms for 17; with
the weight reordered for oneDNN once at load, 4.9, 5.1 and 10.5 ms (`benchmarks/packed_linear.py`; MKL's own
packed-weight product was no faster from 4 rows up). Each row of the packed product is also computed the same way whatever the
row count (MKL's rows differ between one, two-three and four-plus rows); attention still rounds by shape, so a
tree verification's logits are not bit for bit a one-token step's (about 4e-5 apart either way on SmolLM2).

Only fp32 on CPU is packed (bf16 on CPU already runs through oneDNN, and oneDNN refuses to pack bf16 on CPUs
without AVX512/AVX-NE-CONVERT). The packed op has no gradient, so a trainable weight or an input autograd records
takes the plain product of the weight the layer keeps: training through the target's LM head stays correct.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

ROWS_HINT = 64   # oneDNN picks the packed layout for this many rows; 17 and 64 measured alike for 1-1024 rows


ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def can_pack(weight: torch.Tensor) -> bool:
    """Whether this PyTorch build and the weight's dtype and device allow packing."""
    return ONEDNN and weight.device.type == "cpu" and weight.dtype == torch.float32


class PackedLinear(nn.Module):
    """A linear layer whose inference product runs on a oneDNN-packed copy of its weight.

    `weight` and `bias` stay the original tensors (tied embeddings, draft vocabularies, state dicts and the trainer
    read them). The plain product runs instead while the weight is trainable, autograd records the input or either
    is not fp32 on CPU; the copy is packed again when the weight was moved, converted or written in place.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight, self.bias = weight, bias
        self._pack()

    def _source(self) -> tuple[int, int]:
        """What the packed copy was made from: the weight's storage and its in-place version."""
        return self.weight.data_ptr(), -1 if self.weight.is_inference() else self.weight._version

    def _pack(self) -> None:
        packable = can_pack(self.weight)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), ROWS_HINT) if packable else None
        self.packed_from = self._source()
        self._held = self.weight.detach()   # keeps the packed-from storage alive, so its address is not reused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not can_pack(self.weight) or self.weight.requires_grad or x.dtype != torch.float32
                or (torch.is_grad_enabled() and x.requires_grad)):
            return F.linear(x, self.weight, self.bias)
        if self.packed is None or self._source() != self.packed_from:   # moved, converted or written in place
            self._pack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def __deepcopy__(self, memo: dict) -> "PackedLinear":
        """A copy packs its own weight (oneDNN's packed tensors cannot be copied)."""
        return PackedLinear(copy.deepcopy(self.weight, memo), copy.deepcopy(self.bias, memo))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(model: nn.Module) -> int:
    """Swap every `nn.Linear` of a CPU fp32 module for a `PackedLinear`, in place; returns how many (0 when the
    module or the build cannot be packed)."""
    swaps = [(parent, name, child) for parent in model.modules()
             for name, child in parent.named_children() if type(child) is nn.Linear and can_pack(child.weight)]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child.weight, child.bias))
    return len(swaps)


def packed_layers(model: nn.Module) -> int:
    """How many of the model's linear layers run packed (a cost curve measured without them does not apply)."""
    return sum(isinstance(m, PackedLinear) and m.packed is not None for m in model.modules())
