"""fp32 linear layers on oneDNN-packed weights (taps_engine/packing.py): same products, rows independent of the
row count, gradients and in-place changes still honoured, nothing packed where it cannot be."""

from __future__ import annotations

import copy

import pytest
import torch

from taps_engine.packing import PackedLinear, can_pack, pack_linears

from tiny import DEVICE, tiny_target

pytestmark = pytest.mark.skipif(DEVICE.type != "cpu" or not can_pack(torch.zeros(1, 1)),
                                reason="packing applies to fp32 on a CPU with oneDNN")


def _weight(rows: int = 384, cols: int = 256, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def test_a_target_runs_on_packed_layers_with_the_plain_products_result():
    packed, plain = tiny_target(seed=3), tiny_target(seed=3, pack=False)
    model = packed.model
    assert isinstance(model.lm_head, PackedLinear) and isinstance(model.model.layers[0].mlp.up_proj, PackedLinear)
    assert model.lm_head.packed is not None and type(plain.model.lm_head) is torch.nn.Linear
    ids = torch.randint(2, 96, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, plain.model(input_ids=ids).logits,
                                   rtol=1e-5, atol=1e-5)


def test_each_row_is_computed_the_same_whatever_the_row_count():
    layer = PackedLinear(_weight())
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        alone = layer(x[:1])[0]
        for rows in (2, 3, 4, 17, 64):
            assert torch.equal(layer(x[:rows])[0], alone), rows


def test_gradients_flow_through_the_kept_weight():
    weight = torch.nn.Parameter(_weight(64, 32))
    layer = PackedLinear(weight)
    x = torch.randn(5, 32, requires_grad=True)
    layer(x).square().sum().backward()
    expected_x, expected_w = torch.autograd.grad(torch.nn.functional.linear(x, weight).square().sum(), (x, weight))
    torch.testing.assert_close(x.grad, expected_x)
    torch.testing.assert_close(weight.grad, expected_w)
    weight.grad = None
    layer(x.detach()).sum().backward()     # a trainable weight gets its gradient from an input autograd ignores
    torch.testing.assert_close(weight.grad, x.detach().sum(0).expand(64, -1))
    frozen = PackedLinear(_weight(64, 32))
    y = torch.randn(5, 32, requires_grad=True)
    frozen(y).sum().backward()              # a frozen layer still passes the gradient to its input
    torch.testing.assert_close(y.grad, frozen.weight.sum(0).expand(5, -1))


def test_a_weight_written_in_place_or_converted_is_packed_again():
    weight = torch.nn.Parameter(_weight(64, 32), requires_grad=False)
    layer = PackedLinear(weight)
    x = torch.randn(3, 32)
    with torch.no_grad():
        weight.mul_(2)
    torch.testing.assert_close(layer(x), x @ weight.t())
    for seed in range(12):   # a converted weight may land at a freed address: each round is a chance to reuse it
        layer = PackedLinear(torch.nn.Parameter(_weight(64, 32, seed), requires_grad=False))
        layer(x)
        module = torch.nn.Sequential(layer).to(torch.bfloat16)
        assert module(x.bfloat16()).dtype == torch.bfloat16
        module.to(torch.float32)
        torch.testing.assert_close(module(x), x @ layer.weight.t())


def test_copies_pack_their_own_weight():
    layer = PackedLinear(_weight(64, 32), torch.randn(64))
    twin = copy.deepcopy(layer)
    assert twin.weight is not layer.weight and twin.packed is not None
    x = torch.randn(3, 32)
    torch.testing.assert_close(twin(x), layer(x))


def test_only_fp32_cpu_layers_are_packed():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).requires_grad_(False)
    assert pack_linears(copy.deepcopy(model).to(torch.bfloat16)) == 0
    assert pack_linears(model) == 2 and pack_linears(model) == 0        # a second pass finds nothing left
