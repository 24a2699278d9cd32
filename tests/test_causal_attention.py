"""The feature forward's attention computes what the model's stock attention computes."""

import pytest
import torch

from training.causal_attention import CHUNK_ROWS, NAME, chunked_causal
from training.features import final_hidden_states, target_features
from tiny import tiny_chat_target


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_chunked_causal_features_equal_stock_attentions(tokenizer, arch):
    """Lengths below, at and across chunk boundaries, several sequences per forward (right-padded): each row's
    features equal those of the model's own sdpa and eager forwards, and the model is left on sdpa."""
    target = tiny_chat_target(arch, tokenizer)
    g = torch.Generator().manual_seed(0)
    sequences = [torch.randint(5, 90, (n,), generator=g).tolist()
                 for n in (3, CHUNK_ROWS, CHUNK_ROWS + 1, 2 * CHUNK_ROWS + 37)]
    with chunked_causal(target.model):
        chunked = final_hidden_states(target, sequences, batch_tokens=4096)
    assert target.model.config._attn_implementation == "sdpa"
    for implementation in ("sdpa", "eager"):
        target.model.set_attn_implementation(implementation)
        stock = final_hidden_states(target, sequences, batch_tokens=4096)
        for mine, theirs in zip(chunked, stock):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    target.model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("dtype, expected", [(torch.float32, "sdpa"), (torch.bfloat16, NAME)])
def test_feature_forwards_chunk_the_attention_only_in_bf16_on_a_cpu(tokenizer, dtype, expected):
    """Where each was measured faster: the chunks in bf16, sdpa's kernel in fp32."""
    target = tiny_chat_target("llama", tokenizer)
    target.model.to(dtype)
    seen: list[str] = []
    hook = target.model.get_decoder().register_forward_pre_hook(
        lambda module, args: seen.append(target.model.config._attn_implementation))
    try:
        target_features(target, [[5, 6, 7, 8]], batch_tokens=4096)
    finally:
        hook.remove()
    assert seen == [expected]
    assert target.model.config._attn_implementation == "sdpa"
