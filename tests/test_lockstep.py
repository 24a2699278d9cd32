"""Live decoding in lock step: every lane gets what decoding it alone gives (at T=0 plain greedy decoding, at T>0
the same samples for the same seed), with one target forward per step for all lanes."""

import pytest
import torch

from taps_engine import POLICIES, Decoder, PlainDecoder, TreeSettings
from taps_engine.acceptance import SamplingParams
from taps_engine.lockstep import generate_batch
from tiny import EOS, oracle_head, tiny_target

TREE = TreeSettings(12, 3, 3)
PROMPTS = [[0, 5, 17, 33, 8], [0, 40, 41, 42], [0, 9, 9, 9, 9, 9, 12], [0, 3], [0, 61, 2, 77, 30, 30]]


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def setup(request):
    target = tiny_target(request.param, layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    with torch.no_grad():
        target.model.lm_head.weight[EOS] *= 2.0   # lanes that stop early, some inside an accepted draft
    heads = {"oracle": oracle_head(target), "noisy": oracle_head(target, noise=0.5, seed=1)}
    return target, heads


def steps(result):
    return [(s.accepted, s.tree_size, s.bonus_token, tuple(s.drafters)) for s in result.steps]


@pytest.mark.parametrize("policy", POLICIES)
def test_lanes_at_t0_equal_plain_greedy_and_decoding_alone(setup, policy):
    target, heads = setup
    decoder = PlainDecoder(target) if policy == "plain" else Decoder(target, heads, policy, TREE)
    params = [SamplingParams(max_new_tokens=n) for n in (40, 7, 40, 25, 40)]
    assignable = policy in ("single", "sticky", "probe")
    requested = [None, "noisy", None, None, "oracle"] if assignable else [None] * len(PROMPTS)
    together = generate_batch(decoder, PROMPTS, params, requested)
    plain = PlainDecoder(target)
    for prompt, param, drafter, lane in zip(PROMPTS, params, requested, together):
        alone = decoder.generate(prompt, param, drafter)
        assert lane.token_ids == plain.generate(prompt, param).token_ids
        assert steps(lane) == steps(alone) and lane.decision == alone.decision
        assert lane.finish_reason == alone.finish_reason
    assert len({len(r.steps) for r in together}) > 1, "every lane stopped at the same step"


@pytest.mark.parametrize("policy", ["single", "confidence", "merged-trie", "sticky", "probe"])
def test_lanes_at_t1_draw_what_decoding_alone_draws(setup, policy):
    """The same seed gives the same tokens and steps: acceptance consumes each lane's own generator exactly as
    decoding alone does, so the lanes' outputs follow the target's sampling distribution (test_lossless_sampling)."""
    target, heads = setup
    decoder = Decoder(target, heads, policy, TREE)
    params = [SamplingParams(max_new_tokens=30, temperature=1.0, seed=s) for s in range(len(PROMPTS))]
    together = generate_batch(decoder, PROMPTS, params)
    for prompt, param, lane in zip(PROMPTS, params, together):
        alone = decoder.generate(prompt, param)
        assert lane.token_ids == alone.token_ids and steps(lane) == steps(alone)
    assert len({tuple(r.token_ids) for r in together}) == len(PROMPTS)


def test_one_target_forward_verifies_every_lanes_step(setup):
    target, heads = setup
    decoder = Decoder(target, heads, "confidence", TREE)
    params = [SamplingParams(max_new_tokens=30, temperature=1.0, seed=s) for s in range(len(PROMPTS))]
    forwards = []
    hook = target.model.get_decoder().register_forward_hook(lambda *_: forwards.append(1))
    try:
        results = generate_batch(decoder, PROMPTS, params)
    finally:
        hook.remove()
    longest = max(len(r.steps) for r in results)
    assert len(forwards) == len(PROMPTS) + longest   # a prefill per lane, then one forward per lock step
    assert all(r.seconds > 0 for r in results)


def test_lock_step_refuses_what_it_cannot_batch(setup):
    target, heads = setup
    with pytest.raises(ValueError, match="sampling parameters"):
        generate_batch(Decoder(target, heads, "single", TREE), PROMPTS, [SamplingParams()])
    with pytest.raises(ValueError, match="fallback"):
        generate_batch(Decoder(target, heads, "single", TREE, fallback=True), PROMPTS[:1], [SamplingParams()])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("policy", ["single", "confidence", "merged-concat", "merged-trie", "sticky", "probe"])
def test_path_verification_takes_the_steps_of_tree_verification(setup, policy, temperature):
    """`path_only`: the target runs on the accepted path only (one token per lane and forward) and the lanes take
    the same steps and tokens as verifying whole trees, at T=0 and, seed for seed, at T=1."""
    target, heads = setup
    decoder = Decoder(target, heads, policy, TREE)
    params = [SamplingParams(max_new_tokens=30, temperature=temperature, seed=s) for s in range(len(PROMPTS))]
    tree_verified = generate_batch(decoder, PROMPTS, params)
    rows = []
    hook = target.model.get_decoder().register_forward_hook(lambda _, args, kwargs, out: rows.append(
        kwargs["input_ids"].shape), with_kwargs=True)
    try:
        path_verified = generate_batch(decoder, PROMPTS, params, path_only=True)
    finally:
        hook.remove()
    assert [steps(r) for r in path_verified] == [steps(r) for r in tree_verified]
    assert [r.token_ids for r in path_verified] == [r.token_ids for r in tree_verified]
    walked = [shape for shape in rows[len(PROMPTS):]]          # after the prefills: one token per lane
    assert all(width == 1 for _, width in walked)
    assert sum(n for n, _ in walked) == sum(s.accepted + 1 for r in path_verified for s in r.steps)
