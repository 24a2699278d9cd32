"""Tiny random targets and heads for fast unit and property tests."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

from taps_engine.head import DraftHead
from taps_engine.target import Target, from_model

EOS = 1
FIXTURES = Path(__file__).parent / "fixtures"


def tiny_target(arch: str = "llama", vocab: int = 96, layers: int = 2, seed: int = 0,
                logit_scale: float = 1.0, embed_scale: float = 1.0) -> Target:
    """A random fp32 target; `logit_scale` sharpens its distributions, `embed_scale` its residual stream (which
    makes `oracle_head`'s un-normalised predictions confident)."""
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, eos_token_id=EOS,
                  bos_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    else:
        raise ValueError(arch)
    with torch.no_grad():
        model.lm_head.weight.mul_(logit_scale)
        model.model.embed_tokens.weight.mul_(embed_scale)
    model.generation_config.eos_token_id = EOS
    return from_model(model.float(), name=f"tiny-{arch}")


def oracle_head(target: Target, noise: float = 0.0, seed: int = 0) -> DraftHead:
    """For a 1-layer target: a head that re-runs that layer on the next token's embedding.

    Its predicted feature is the target's pre-norm hidden state (without the first token in context), whose
    argmax through the LM head matches the target's almost always; `noise` makes it imperfect.
    """
    model = target.model
    assert model.config.num_hidden_layers == 1
    head = DraftHead.for_target(model, input_norm=True)
    hidden = model.config.hidden_size
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[:, :hidden] = torch.eye(hidden)
        head.layers[0].load_state_dict(model.model.layers[0].state_dict())
        if noise:
            g = torch.Generator().manual_seed(seed)
            for p in head.parameters():
                p.add_(noise * p.abs().mean() * torch.randn(p.shape, generator=g))
    return head.eval()


def tiny_chat_target(arch: str, tokenizer) -> Target:
    """A tiny random target over a real tokenizer's vocabulary, so real chat data renders for it."""
    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**common)) if arch == "llama" else \
        Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    return from_model(model.float(), tokenizer, name=f"tiny-{arch}")
