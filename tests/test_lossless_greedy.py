"""T=0: every policy reproduces plain greedy decoding token for token."""

import random

import pytest
import torch

from taps_engine import POLICIES, Decoder, DraftHead, PlainDecoder, TreeSettings
from tiny import EOS, oracle_head, tiny_target

SPEC_POLICIES = [p for p in POLICIES if p != "plain"]


def hf_greedy(target, ids, max_new_tokens, eos=True):
    inputs = torch.tensor([ids], device=target.device)
    out = target.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                                do_sample=False, eos_token_id=EOS if eos else None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def random_prompts(n, vocab, seed):
    rng = random.Random(seed)
    return [[0] + [rng.randrange(2, vocab) for _ in range(rng.randrange(1, 24))] for _ in range(n)]


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def setup(request):
    """A 1-layer target with an oracle-like head (deep acceptance), a noisy one and a random one."""
    target = tiny_target(request.param, layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    with torch.no_grad():
        target.model.lm_head.weight[EOS] *= 2.0  # EOS shows up mid-sequence, sometimes inside accepted drafts
    heads = {"oracle": oracle_head(target), "noisy": oracle_head(target, noise=0.5, seed=1),
             "random": DraftHead.random(target.model, seed=3)}
    return target, heads


def test_plain_decoder_matches_transformers_generate(setup):
    target, _ = setup
    plain = PlainDecoder(target)
    for ids in random_prompts(5, 96, 0):
        assert plain.generate(ids, max_new_tokens=30).token_ids == hf_greedy(target, ids, 30)


@pytest.mark.parametrize("policy", SPEC_POLICIES)
def test_every_policy_equals_greedy(setup, policy):
    target, heads = setup
    rng = random.Random(policy)
    deep = 0
    for i, ids in enumerate(random_prompts(20, 96, seed=len(policy))):
        names = rng.sample(sorted(heads), 2)
        settings = TreeSettings(rng.choice([6, 16, 40]), rng.choice([2, 4, 6]), rng.choice([1, 3, 6]))
        decoder = Decoder(target, {n: heads[n] for n in names}, policy, settings, fallback=rng.random() < 0.5)
        max_new = rng.choice([1, 2, 3, 17, 48])
        result = decoder.generate(ids, max_new_tokens=max_new, seed=i)
        expected = hf_greedy(target, ids, max_new)
        assert result.token_ids == expected, f"prompt {i} drafters {names} {settings}"
        assert result.finish_reason == ("eos" if expected[-1] == EOS else "length")
        deep += any(s.accepted >= 2 for s in result.steps)
    assert deep >= 5, "the oracle heads should get multi-token acceptances"


def test_eos_inside_accepted_drafts_and_no_eos_mode(setup):
    target, heads = setup
    decoder = Decoder(target, {"oracle": heads["oracle"]}, "single", TreeSettings(16, 6, 2))
    saw_eos_in_drafts = False
    for i, ids in enumerate(random_prompts(20, 96, seed=99)):
        result = decoder.generate(ids, max_new_tokens=64)
        assert result.token_ids == hf_greedy(target, ids, 64)
        if result.finish_reason == "eos" and result.steps and result.steps[-1].bonus_token != EOS:
            saw_eos_in_drafts = True  # EOS was an accepted draft, followed by a (discarded) bonus token
        free = decoder.generate(ids, max_new_tokens=40, stop_on_eos=False)
        assert free.token_ids == hf_greedy(target, ids, 40, eos=False)
        assert len(free.token_ids) == 40
    assert saw_eos_in_drafts


def test_two_layer_targets_with_random_heads():
    for arch in ("llama", "qwen3"):
        target = tiny_target(arch, layers=2, seed=21)
        heads = {"a": DraftHead.random(target.model, 1), "b": DraftHead.random(target.model, 2)}
        for policy in SPEC_POLICIES:
            decoder = Decoder(target, heads, policy, TreeSettings(12, 3, 3))
            for ids in random_prompts(3, 96, seed=7):
                assert decoder.generate(ids, max_new_tokens=20).token_ids == hf_greedy(target, ids, 20)


@pytest.mark.parametrize("policy", ["single", "confidence", "merged-concat", "sticky", "probe"])
def test_plain_steps_between_speculative_ones_stay_lossless(setup, policy, monkeypatch):
    """The fallback's plain steps interleaved with speculative ones (every third step speculates): the drafters
    catch up on the tokens committed plainly and the output is still plain greedy decoding."""
    from taps_engine import economics

    calls = iter(range(10 ** 6))
    monkeypatch.setattr(economics.StepEconomics, "speculate", lambda self: next(calls) % 3 == 0)
    target, heads = setup
    decoder = Decoder(target, {"oracle": heads["oracle"], "noisy": heads["noisy"]}, policy, TreeSettings(12, 3, 3),
                      fallback=True)
    for ids in random_prompts(4, 96, seed=7):
        result = decoder.generate(ids, max_new_tokens=40, stop_on_eos=False)
        assert result.token_ids == hf_greedy(target, ids, 40, eos=False)
        assert 0 < result.plain_steps < len(result.steps)
        assert any(s.accepted >= 1 for s in result.steps)
        drafted = len(result.steps) - result.plain_steps   # plain steps commit one token each
        assert result.drafted_tau * drafted + result.plain_steps == pytest.approx(result.tau * len(result.steps))
        assert result.drafted_tau > result.tau


@pytest.mark.parametrize("policy", SPEC_POLICIES)
def test_every_policy_equals_greedy_with_draft_vocabularies(setup, policy):
    """Heads that draft from a subset of the vocabulary (EAGLE-3's d2t): verification keeps the full vocabulary,
    so the output is still plain greedy decoding, and every drafted token comes from the subset."""
    import copy

    target, heads = setup
    g = torch.Generator().manual_seed(3)
    reduced = {}
    for name, head in heads.items():
        reduced[name] = copy.deepcopy(head)
        reduced[name].set_draft_vocab(torch.randperm(96, generator=g)[:48])
    decoder = Decoder(target, {n: reduced[n] for n in ("oracle", "noisy")}, policy, TreeSettings(16, 3, 4))
    allowed = set(reduced["oracle"].draft_vocab.tolist()) | set(reduced["noisy"].draft_vocab.tolist())
    for i, ids in enumerate(random_prompts(6, 96, seed=21)):
        result = decoder.generate(ids, max_new_tokens=30, stop_on_eos=False)
        assert result.token_ids == hf_greedy(target, ids, 30, eos=False), f"prompt {i}"
    drafted = {t for s in decoder.drafters.values() for t in s.propose(TreeSettings(16, 3, 4)).tokens.tolist()}
    assert drafted <= allowed
