"""The architecture matrix: tiny random fp32 models of each decoder family through the engine, every policy, T=0,
against transformers' `generate`. Prompts plus answers (13 + 20 tokens) cross the sliding windows (8) of the
families that have them; what cannot be supported is refused at load time, naming the architecture."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from taps_engine import Decoder, TreeSettings
from taps_engine.attention import attn_implementation
from taps_engine.head import DraftHead
from taps_engine.policies import POLICY_SPECS
from taps_engine.target import from_model
from tiny import ContinuationProposer

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, eos_token_id=1, bos_token_id=0, pad_token_id=2)
WINDOW = 8
FAMILIES = {
    "llama": ("llama", {}),
    "qwen2": ("qwen2", {}),
    "qwen2-sliding": ("qwen2", {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1}),
    "qwen3": ("qwen3", {"head_dim": 16}),
    "qwen3-moe": ("qwen3_moe", {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                "moe_intermediate_size": 32}),
    "mistral-window-8": ("mistral", {"sliding_window": WINDOW}),
    "mistral-window-4096": ("mistral", {"sliding_window": 4096}),
    "gemma2": ("gemma2", {"head_dim": 16, "sliding_window": WINDOW, "query_pre_attn_scalar": 16}),
    "gemma3": ("gemma3_text", {"head_dim": 16, "sliding_window": WINDOW, "query_pre_attn_scalar": 16,
                               "layer_types": ["sliding_attention", "full_attention"]}),
    "phi3": ("phi3", {}),
    "phi3-window-8": ("phi3", {"sliding_window": WINDOW}),
    "olmo2": ("olmo2", {}),
    "granite": ("granite", {"logits_scaling": 4.0, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                            "attention_multiplier": 0.25}),
}
POLICIES = [spec.name for spec in POLICY_SPECS if spec.needs_drafters]


def tiny(model_type: str, **extra):
    config = AutoConfig.for_model(model_type, **COMMON, **extra)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation(config)).float()
    with torch.no_grad():  # sharper distributions: drafts get accepted, so paths and cache compaction are exercised
        model.get_output_embeddings().weight.mul_(4.0)
    model.generation_config.eos_token_id = 1
    return model


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_policy_reproduces_generate(family):
    model_type, extra = FAMILIES[family]
    model = tiny(model_type, **extra)
    target = from_model(model, name=family)
    heads = {"a": DraftHead.random(model, seed=0), "b": DraftHead.random(model, seed=1)}  # the family's own layer
    knowing = {"a": ContinuationProposer("a", model, first_token=0), "b": DraftHead.random(model, seed=1)}
    prompts = [[0] + [(7 * p + 3 * i) % 90 + 3 for i in range(12)] for p in range(2)]
    expected = [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               max_new_tokens=20, do_sample=False, eos_token_id=None)[0, len(p):].tolist()
                for p in prompts]
    runs = [(policy, heads) for policy in POLICIES] + [(policy, knowing) for policy in ("single", "merged-trie")]
    for policy, drafters in runs:
        decoder = Decoder(target, drafters, policy, TreeSettings(8, 3, 2))
        for prompt, reference in zip(prompts, expected):
            result = decoder.generate(prompt, max_new_tokens=20, stop_on_eos=False)
            assert result.token_ids == reference, (family, policy)
            if drafters is knowing and policy == "single":
                assert result.tau > 2.5, "long accepted paths: cache compaction under the tree is exercised"


def test_unsupported_attention_is_refused_at_load_time_with_its_reason():
    config = AutoConfig.for_model("llama", **COMMON)
    config.attention_chunk_size = 16
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match="chunked attention"):
        from_model(model)


def test_a_model_whose_logits_are_post_processed_unknowingly_is_refused():
    model = tiny("llama")

    class Shifted(type(model)):  # a family that adds something to its logits that TAPS does not know about
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits + torch.arange(out.logits.shape[-1], dtype=out.logits.dtype)
            return out

    model.__class__ = Shifted
    with pytest.raises(ValueError, match="Shifted: its logits are not .* cannot verify drafts for it losslessly"):
        from_model(model)
