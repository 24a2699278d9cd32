"""Batched greedy decoding (`greedy_batch`, what replay's references and self-distillation's answers come from):
each prompt gets the plain loop's own continuation, and a prompt that meets a stop token ends there while the
others go on."""

import pytest
import torch

from taps_engine.decoding import PlainDecoder
from taps_engine.greedy import greedy_batch, greedy_batch_features
from taps_engine.slots import SlotCache
from taps_engine.target import from_model
from taps_engine.verifier import TargetVerifier, prefill_batch
from test_architectures import FAMILIES, tiny
from tiny import tiny_target


def test_each_prompt_stops_at_its_own_stop_token_and_the_rest_go_on():
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    prompts = [[0, 5, 17, 33, 8], [0, 40, 41, 42], [0, 9, 9, 9, 9, 9, 12], [0, 3]]
    plain = [PlainDecoder(target).generate(p, max_new_tokens=20, stop_on_eos=False).token_ids for p in prompts]
    stop = plain[0][3]   # a token the first prompt meets early: it must stop there, wherever else it occurs
    expected = [row[:row.index(stop) + 1] if stop in row else row for row in plain]
    got = greedy_batch(target, prompts, 20, stop_ids={stop})
    assert got == expected
    assert len({len(row) for row in got}) > 1, "every prompt stopped at the same length: nothing was tested"
    assert greedy_batch(target, prompts, 20) == plain
    assert greedy_batch(target, prompts, 0) == [[]] * 4


def test_a_lane_that_stops_leaves_the_others_exact_in_fp32():
    """After lanes stop, the running ones are no longer consecutive slots (their cache rows are gathered): their
    continuations must stay the plain loop's."""
    target = tiny_target("qwen3", layers=2, seed=3, logit_scale=6.0, embed_scale=60.0)
    prompts = [[0, 7], [0, 8, 9], [0, 10, 11, 12], [0, 13]]
    plain = [PlainDecoder(target).generate(p, max_new_tokens=16, stop_on_eos=False).token_ids for p in prompts]
    stops = {plain[0][1], plain[2][2]}
    expected = []
    for row in plain:
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        expected.append(row[:cut])
    assert greedy_batch(target, prompts, 16, stop_ids=stops) == expected
    assert torch.get_default_dtype() == torch.float32


def test_decoding_features_are_those_of_one_forward_over_prompt_and_continuation():
    """What self-distillation keeps instead of a second pass: along each prompt and continuation (stopped early or
    at the budget), the features of the forwards that decoded it equal one forward's over the whole sequence."""
    target = tiny_target("qwen3", layers=2, seed=3, logit_scale=6.0, embed_scale=60.0)
    prompts = [[0, 7], [0, 8, 9], [0, 10, 11, 12], [0, 13]]
    plain = greedy_batch(target, prompts, 12)
    stops = {plain[1][2]}
    tokens, features = greedy_batch_features(target, prompts, 12, stop_ids=stops)
    assert tokens == greedy_batch(target, prompts, 12, stop_ids=stops)
    assert len({len(row) for row in tokens}) > 1
    decoder = target.model.get_decoder()
    for prompt, continuation, read in zip(prompts, tokens, features):
        whole = decoder(input_ids=torch.tensor([prompt + continuation])).last_hidden_state[0]
        assert read.shape == whole.shape
        torch.testing.assert_close(read, whole, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        greedy_batch_features(target, prompts, 0)


@pytest.mark.parametrize("family", ["llama", "qwen2-sliding", "mistral-window-8", "gemma2", "gemma3"])
def test_prompts_prefilled_together_continue_as_transformers_generate(family):
    """Prompts of different lengths (across the sliding windows) share right-padded prefill forwards; each
    continues as transformers' `generate` continues it alone, so no prompt's cache holds another's or its
    padding's entries."""
    model_type, extra = FAMILIES[family]
    model = tiny(model_type, **extra)
    target = from_model(model, name=family)
    prompts = [[0] + [(5 * p + 3 * i) % 90 + 3 for i in range(n)] for p, n in enumerate((2, 12, 19, 7))]
    expected = [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                               max_new_tokens=12, do_sample=False, eos_token_id=None)[0, len(p):].tolist()
                for p in prompts]
    verifiers = [TargetVerifier(target, SlotCache.for_model(model.config))]
    verifiers += [TargetVerifier(target, verifiers[0].cache) for _ in prompts[1:]]
    together = prefill_batch(verifiers, prompts, padded_tokens=40)  # two forwards: lengths 3, 8 and 13, then 20
    for prompt, (features, logits) in zip(prompts, together):
        alone_features, alone_logits = TargetVerifier(target).prefill(prompt)
        assert features.shape == (len(prompt), 64)
        torch.testing.assert_close(features, alone_features, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits, alone_logits, rtol=1e-5, atol=1e-5)
    assert greedy_batch(target, prompts, 12) == expected
