"""Wire encoding of tensors and draft trees: exact round trips and clear rejection of malformed messages."""

import pytest
import torch

from services.protos_gen.taps.v1 import taps_pb2 as pb
from services.codec import DTYPES, from_proto, to_proto
from services.codec import settings_from_proto, settings_to_proto, tree_from_proto, tree_to_proto
from taps_engine.drafter import Drafter, TreeSettings
from taps_engine.head import DraftHead
from taps_engine.tree import DraftTree, trie
from taps_engine.verifier import TargetVerifier
from tiny import tiny_target


def _sample(dtype: torch.dtype, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=g) * 100).to(dtype)
    return torch.randint(-2**31, 2**31 - 1, shape, generator=g).to(dtype)


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (7,), (2, 3, 5)])
def test_round_trip_is_exact(name, shape):
    tensor = _sample(DTYPES[name], shape)
    msg = to_proto(tensor)
    assert msg.dtype == name and list(msg.shape) == list(shape)
    wire = pb.Tensor.FromString(msg.SerializeToString())
    back = from_proto(wire)
    assert back.dtype == tensor.dtype and back.shape == tensor.shape
    # compare bit patterns, so NaN payloads and -0.0 count too
    assert torch.equal(back.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8))


def test_special_floats_and_bf16_bits():
    t = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 1e-40, 3.140625], dtype=torch.bfloat16)
    back = from_proto(to_proto(t))
    assert torch.equal(back.view(torch.int16), t.view(torch.int16))


def test_non_contiguous_and_result_is_writable():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    view = base.t()[1:, ::2]
    back = from_proto(to_proto(view))
    assert torch.equal(back, view)
    back += 1  # decoded tensors own their memory


def test_device_argument():
    t = torch.ones(2, 2)
    assert from_proto(to_proto(t), device="cpu").device.type == "cpu"


def test_unsupported_and_unknown_dtypes_rejected():
    with pytest.raises(ValueError, match="unsupported tensor dtype"):
        to_proto(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown tensor dtype 'float64'"):
        from_proto(pb.Tensor(data=b"\0" * 8, dtype="float64", shape=[1]))
    with pytest.raises(ValueError, match="unknown tensor dtype ''"):
        from_proto(pb.Tensor())


@pytest.mark.parametrize("data,shape,dtype", [
    (b"\0" * 7, [2], "float32"),      # too short
    (b"\0" * 12, [2], "float32"),     # too long
    (b"\0" * 2, [2], "bfloat16"),
    (b"\0" * 2, [], "float32"),        # a scalar still needs one element's bytes
    (b"", [1], "int64"),
    (b"\0" * 4, [-1, -4], "float32"),  # negative dimensions
])
def test_size_mismatch_rejected(data, shape, dtype):
    with pytest.raises(ValueError, match="bytes but shape|negative dimension"):
        from_proto(pb.Tensor(data=data, dtype=dtype, shape=shape))


def test_bool_bytes_other_than_0_1_rejected():
    with pytest.raises(ValueError, match="other than 0 and 1"):
        from_proto(pb.Tensor(data=b"\x00\x02", dtype="bool", shape=[2]))


@pytest.fixture(scope="module")
def engine_tree() -> DraftTree:
    """A real tree from the engine: a random head drafting for a tiny random target."""
    target = tiny_target()
    ids = [0, 5, 17, 42, 8, 33, 9]
    features, logits = TargetVerifier(target).prefill(ids)
    drafter = Drafter("random", DraftHead.random(target.model, seed=1), target)
    drafter.extend(ids[1:] + [int(logits.argmax())], features)
    tree = drafter.propose(TreeSettings(total_tokens=16, depth=4, top_k=4))
    assert len(tree) == 15 and tree.max_depth > 1
    return tree


def _assert_same_tree(a: DraftTree, b: DraftTree) -> None:
    for name in ("tokens", "parents", "depths", "scores", "entropies", "sources"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


def test_engine_tree_round_trip(engine_tree):
    wire = pb.DraftTree.FromString(tree_to_proto(engine_tree).SerializeToString())
    back = tree_from_proto(wire)
    _assert_same_tree(back, engine_tree)
    assert torch.equal(back.ancestor_mask(), engine_tree.ancestor_mask())


def test_merged_and_empty_trees_round_trip(engine_tree):
    merged = trie([engine_tree, engine_tree])
    merged.sources = torch.arange(len(merged)) % 2
    _assert_same_tree(tree_from_proto(tree_to_proto(merged)), merged)
    _assert_same_tree(tree_from_proto(tree_to_proto(DraftTree.empty())), DraftTree.empty())


def _corrupt(tree: DraftTree, **arrays) -> pb.DraftTree:
    msg = tree_to_proto(tree)
    for name, value in arrays.items():
        getattr(msg, name).CopyFrom(to_proto(value))
    return msg


def test_malformed_trees_rejected(engine_tree):
    n = len(engine_tree)
    cases = {
        "differ in length": dict(tokens=engine_tree.tokens[:-1]),
        "must be int64": dict(parents=engine_tree.parents.to(torch.int32)),
        "floating point": dict(scores=torch.zeros(n, dtype=torch.int64)),
        "must be 1-D": dict(depths=engine_tree.depths[None]),
        "earlier node": dict(parents=torch.arange(n)),
        "depths must be": dict(depths=torch.ones(n, dtype=torch.long)),
        "non-negative": dict(tokens=torch.full((n,), -3)),
    }
    for message, arrays in cases.items():
        with pytest.raises(ValueError, match=message):
            tree_from_proto(_corrupt(engine_tree, **arrays))
    msg = tree_to_proto(engine_tree)
    msg.ClearField("entropies")
    with pytest.raises(ValueError, match="lacks entropies"):
        tree_from_proto(msg)


def test_tree_settings_round_trip_and_validation():
    settings = TreeSettings(total_tokens=24, depth=5, top_k=6)
    assert settings_from_proto(settings_to_proto(settings)) == settings
    with pytest.raises(ValueError, match="total_tokens"):
        settings_from_proto(pb.TreeSettings())
