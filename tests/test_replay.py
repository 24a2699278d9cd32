"""Replay (exact T=0 acceptance without verification passes) equals live decoding step for step, one prompt at a
time and several in lock step (their drafting batched)."""

import pytest
import torch

from taps_engine import POLICIES, Decoder, TreeSettings
from taps_engine.acceptance import SamplingParams
from taps_engine.decoding import PlainDecoder
from taps_engine.replay import reference, references_batch, replay, replay_batch
from tiny import EOS, oracle_head, tiny_target

TREE = TreeSettings(12, 3, 3)


def steps(result):
    return [(s.accepted, s.tree_size, s.bonus_token, tuple(s.drafters)) for s in result.steps]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_replay_equals_live_decoding_on_every_step(arch):
    target = tiny_target(arch, layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    with torch.no_grad():
        target.model.lm_head.weight[EOS] *= 2.0   # EOS inside accepted drafts, and answers that stop early
    heads = {"oracle": oracle_head(target), "noisy": oracle_head(target, noise=0.5, seed=1)}
    prompts = [[0, 5, 17, 33, 8], [0, 40, 41, 42], [0, 9, 9, 9, 9, 9, 12]]
    params = SamplingParams(max_new_tokens=40)
    refs = [reference(target, prompt, 40, TREE.depth + 2) for prompt in prompts]
    compared = 0
    for policy in [p for p in POLICIES if p != "plain"]:
        decoder = Decoder(target, heads, policy, TREE)
        batched = replay_batch(decoder, refs, params)
        for prompt, ref, together in zip(prompts, refs, batched):
            live = decoder.generate(prompt, params)
            for replayed in (replay(decoder, ref, params), together):
                assert replayed.token_ids == live.token_ids and replayed.finish_reason == live.finish_reason
                assert steps(replayed) == steps(live), (policy, prompt)
            compared += len(live.steps)
    assert compared > 100


def test_lock_step_replay_takes_each_lanes_drafter_and_length():
    """Lanes that stop at different steps (EOS, `max_new_tokens`) and ask for different drafters each get what
    replaying them alone gives; one head forward per tree level drafts every lane's tree."""
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    with torch.no_grad():
        target.model.lm_head.weight[EOS] *= 2.0
    heads = {"oracle": oracle_head(target), "noisy": oracle_head(target, noise=0.5, seed=1)}
    prompts = [[0, 5, 17, 33, 8], [0, 40, 41, 42], [0, 9, 9, 9, 9, 9, 12], [0, 3]]
    params = SamplingParams(max_new_tokens=30)
    refs = [reference(target, prompt, 30, TREE.depth + 2) for prompt in prompts]
    requested = ["noisy", None, "oracle", "noisy"]
    for policy in ("single", "sticky", "probe"):
        decoder = Decoder(target, heads, policy, TREE)
        alone = [replay(decoder, ref, params, drafter) for ref, drafter in zip(refs, requested)]
        together = replay_batch(decoder, refs, params, requested)
        assert [steps(r) for r in together] == [steps(r) for r in alone]
        assert [r.decision.drafter for r in together] == [r.decision.drafter for r in alone]
        assert len({len(r.steps) for r in together}) > 1, "every lane stopped at the same step"
    head = heads["oracle"]
    forwards = []
    head.register_forward_hook(lambda *_: forwards.append(1))
    single = Decoder(target, {"oracle": head}, "single", TREE)
    results = replay_batch(single, refs, params)
    longest = max(len(r.steps) for r in results)
    # a catch-up forward and TREE.depth expansions per step, for all lanes at once (and once more for the lanes'
    # next step, drafted ahead, before the last lane finishes)
    assert len(forwards) <= (longest + 1) * (TREE.depth + 1)


def test_replay_judges_every_drafters_tree_where_all_draft():
    """The oracle's view: a routed step's chosen candidate accepted what the step accepted, a merged trie at least
    what its best candidate would have; live decoding judges nothing (it does not know the continuation)."""
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    heads = {"noisy": oracle_head(target, noise=1.5, seed=1), "noisier": oracle_head(target, noise=3.0, seed=2)}
    prompt, params = [0, 5, 17, 33, 8], SamplingParams(max_new_tokens=40)
    ref = reference(target, prompt, 40, TREE.depth + 2)
    routed = replay(Decoder(target, heads, "entropy", TREE), ref, params).steps
    assert all(set(s.candidate_accepted) == set(heads) for s in routed)
    assert all(s.candidate_accepted[s.drafters[0]] == s.accepted for s in routed)
    assert any(len(set(s.candidate_accepted.values())) > 1 for s in routed), "the candidates never differed"
    merged = replay(Decoder(target, heads, "merged-trie", TREE), ref, params).steps
    assert all(s.accepted >= max(s.candidate_accepted.values()) for s in merged)
    assert replay(Decoder(target, heads, "single", TREE), ref, params).steps[0].candidate_accepted == {}
    assert all(not s.candidate_accepted for s in Decoder(target, heads, "entropy", TREE).generate(prompt, params).steps)


def test_references_decoded_together_are_the_plain_loops_answers():
    """Lanes of different prompt lengths decoded in lock step: each continuation is the plain loop's own (past EOS
    too), with the features of one forward over prompt + continuation."""
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    with torch.no_grad():
        target.model.lm_head.weight[EOS] *= 2.0
    prompts = [[0, 5, 17, 33, 8], [0, 40, 41, 42], [0, 9, 9, 9, 9, 9, 12], [0, 3]]
    together = references_batch(target, prompts, 24, 5)
    for prompt, ref in zip(prompts, together):
        plain = PlainDecoder(target).generate(prompt, max_new_tokens=29, stop_on_eos=False)
        assert ref.prompt_ids == prompt and ref.continuation == plain.token_ids
        with torch.no_grad():
            features = target.model.get_decoder()(input_ids=torch.tensor([prompt + plain.token_ids])).last_hidden_state[0]
        torch.testing.assert_close(ref.features, features)
    assert any(EOS in ref.continuation[:-1] for ref in together), "no continuation went on past EOS"


def test_replay_refuses_sampling_and_a_short_reference():
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    decoder = Decoder(target, {"oracle": oracle_head(target)}, "single", TREE)
    ref = reference(target, [0, 5, 17], 16, TREE.depth + 2)
    with pytest.raises(ValueError, match="T=0 only"):
        replay(decoder, ref, SamplingParams(max_new_tokens=16, temperature=1.0))
    with pytest.raises(ValueError, match="need 21"):
        replay(decoder, reference(target, [0, 5, 17], 16, 0), SamplingParams(max_new_tokens=16))


@pytest.mark.real_model
def test_replay_equals_live_decoding_on_smollm2(smollm2):
    from taps_engine.drafter_specs import default_drafters
    from taps_engine.head import load_head
    from taps_engine.target import DEFAULT_TARGET

    heads = {name: load_head(path, smollm2.model) for name, path in default_drafters(DEFAULT_TARGET).items()}
    params = SamplingParams(max_new_tokens=32)
    tree = TreeSettings(16, 3, 4)
    conversations = [[{"role": "user", "content": prompt}] for prompt in (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
        "clips did Natalia sell altogether in April and May?", "Write a haiku about autumn.")]
    refs = [reference(smollm2, messages, 32, tree.depth + 2) for messages in conversations]
    for policy in ("single", "confidence", "merged-trie"):
        decoder = Decoder(smollm2, heads, policy, tree)
        together = replay_batch(decoder, refs, params)
        for messages, ref, batched in zip(conversations, refs, together):
            live = decoder.generate(messages, params)
            assert steps(replay(decoder, ref, params)) == steps(live), (policy, messages)
            assert steps(batched) == steps(live), (policy, messages)
