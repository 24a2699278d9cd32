"""Draft head checkpoints (TAPS and EAGLE layouts), size checks and weight averaging."""

import json

import pytest
import torch
from safetensors.torch import save_file

from taps_engine import Decoder, DraftHead, TreeSettings, average_heads, load_head, save_head
from taps_engine.verifier import TargetVerifier
from tiny import tiny_target


def predict(head, target, ids=(0, 5, 9, 12, 3)):
    """Head outputs over a prompt's pairs: a functional fingerprint of its weights."""
    features, _ = TargetVerifier(target).prefill(list(ids))
    embeds = target.model.get_input_embeddings()(torch.tensor([list(ids[1:])]))
    with torch.no_grad():
        return head(embeds, features[None, :-1], torch.arange(len(ids) - 1)[None])


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_save_load_roundtrip_excludes_target_weights(tmp_path, arch):
    target = tiny_target(arch)
    head = DraftHead.random(target.model, seed=1)
    save_head(head, tmp_path / "h")
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["model_type"] == arch
    loaded = load_head(tmp_path / "h", target.model)
    assert set(loaded.state_dict()) == set(head.state_dict())
    assert not any(k.startswith(("embed_tokens", "lm_head")) for k in loaded.state_dict())
    assert all(k.startswith(("fc.", "layers.0.")) for k in loaded.state_dict())
    assert torch.allclose(predict(loaded, target), predict(head, target))


def test_loads_eagle_layout_checkpoint(tmp_path):
    """EAGLE's files: fc.weight(+bias), layers.0.* without input_layernorm, an extra embed_tokens, a LlamaConfig."""
    target = tiny_target("llama")
    reference = DraftHead.for_target(target.model, fc_bias=True, input_norm=False)
    torch.manual_seed(0)
    for p in reference.parameters():
        torch.nn.init.normal_(p, std=0.05)
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    assert "layers.0.input_layernorm.weight" not in state
    state["embed_tokens.weight"] = torch.randn(96, 64)
    save_file(state, str(tmp_path / "model.safetensors"))
    eagle_config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1,
                    "vocab_size": 96, "bias": True}
    (tmp_path / "config.json").write_text(json.dumps(eagle_config))
    head = load_head(tmp_path, target.model)
    assert head.fc_bias and not head.input_norm
    assert torch.allclose(predict(head, target), predict(reference, target))
    # an EAGLE pytorch_model.bin with the same tensors loads too
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert torch.allclose(predict(load_head(tmp_path, target.model), target), predict(reference, target))


def test_loaded_head_decodes_losslessly(tmp_path):
    target = tiny_target("qwen3")
    save_head(DraftHead.random(target.model, seed=5), tmp_path / "h")
    head = load_head(tmp_path / "h", target.model)
    plain = Decoder(target, policy="plain").generate([0, 4, 6], max_new_tokens=12).token_ids
    assert Decoder(target, {"h": head}, "single", TreeSettings(10, 3, 3)).generate([0, 4, 6], max_new_tokens=12).token_ids == plain


def test_hidden_size_mismatch_is_a_clear_error(tmp_path):
    small = tiny_target("llama")
    big = tiny_target("llama")
    big_cfg = big.model.config
    big_cfg.hidden_size = 32
    big_cfg.head_dim = 8
    from transformers import LlamaForCausalLM

    other = LlamaForCausalLM(big_cfg)
    save_head(DraftHead.random(other), tmp_path / "h")
    with pytest.raises(ValueError, match="hidden size 32 does not match the target's hidden size 64"):
        load_head(tmp_path / "h", small.model)
    with pytest.raises(ValueError, match="hidden size"):
        Decoder(small, {"x": DraftHead.random(other)})


def test_bad_checkpoints_are_clear_errors(tmp_path):
    target = tiny_target("llama")
    with pytest.raises(ValueError, match="not found"):
        load_head(tmp_path / "missing", target.model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_head(tmp_path / "empty", target.model)
    save_file({"foo": torch.zeros(1)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="no fc.weight"):
        load_head(tmp_path / "w.safetensors", target.model)


def test_averaging_endpoints_and_midpoint():
    target = tiny_target("llama")
    a, b = DraftHead.random(target.model, seed=1), DraftHead.random(target.model, seed=2)
    for alpha, expected in ((0.0, a), (1.0, b)):
        mixed = average_heads(a, b, alpha)
        assert all(torch.equal(mixed.state_dict()[k], expected.state_dict()[k]) for k in a.state_dict())
        assert torch.allclose(predict(mixed, target), predict(expected, target))
    mid = average_heads(a, b, 0.5)
    assert torch.allclose(mid.fc.weight, (a.fc.weight + b.fc.weight) / 2)
    with pytest.raises(ValueError, match="alpha"):
        average_heads(a, b, 1.5)


def test_draft_vocabulary_round_trips_as_eagle3_d2t(tmp_path):
    from safetensors.torch import load_file

    target = tiny_target("llama")
    head = DraftHead.random(target.model, seed=1)
    vocab = torch.tensor([7, 3, 50, 11])
    head.set_draft_vocab(vocab)
    save_head(head, tmp_path / "h")
    stored = load_file(str(tmp_path / "h" / "model.safetensors"))
    assert torch.equal(stored["d2t"], vocab - torch.arange(4))   # draft index i -> target id i + d2t[i]
    loaded = load_head(tmp_path / "h", target.model)
    assert torch.equal(loaded.draft_vocab, vocab)
    assert torch.equal(loaded.fc.weight, head.fc.weight)
    with pytest.raises(ValueError, match="distinct token ids"):
        head.set_draft_vocab(torch.tensor([1, 1]))
    with pytest.raises(ValueError, match=r"in \[0, 96\)"):
        head.set_draft_vocab(torch.tensor([96]))
    head.set_draft_vocab(None)
    assert head.draft_vocab is None and "d2t" not in head.state_dict()
