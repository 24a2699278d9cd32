"""T>0: speculative sampling leaves the target's output distribution unchanged (chi-square, fixed seeds)."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from taps_engine import Decoder, DraftHead, SamplingParams, TreeSettings
from taps_engine.acceptance import target_probs
from tiny import oracle_head, tiny_target

VOCAB = 8
PROMPT = [0, 3, 5]
N_SAMPLES = 2000


@pytest.fixture(scope="module")
def target():
    t = tiny_target("llama", vocab=VOCAB, layers=1, seed=5, logit_scale=40.0, embed_scale=30.0)
    t.model.generation_config.eos_token_id = None  # no stopping: every sample has three tokens
    t.model.config.eos_token_id = None
    return t


def exact_joint(target, params: SamplingParams) -> torch.Tensor:
    """P(x2, x3) after PROMPT, marginalised over x1, from the target's own warped distributions."""
    def probs(seqs: list[list[int]]) -> torch.Tensor:
        with torch.no_grad():
            return target_probs(target.model(torch.tensor(seqs, device=target.device)).logits[:, -1], params).cpu()

    p1 = probs([PROMPT])[0]
    p2 = probs([PROMPT + [a] for a in range(VOCAB)])                                              # (x1, x2)
    p3 = probs([PROMPT + [a, b] for a, b in itertools.product(range(VOCAB), repeat=2)]).view(VOCAB, VOCAB, VOCAB)
    joint = p1[:, None, None] * p2[:, :, None] * p3
    return joint.sum(0).flatten()


def sample_joint(decoder, params: SamplingParams) -> torch.Tensor:
    counts = torch.zeros(VOCAB * VOCAB)
    for seed in range(N_SAMPLES):
        out = decoder.generate(PROMPT, max_new_tokens=3, temperature=params.temperature, top_p=params.top_p,
                               top_k=params.top_k, seed=seed, stop_on_eos=False).token_ids
        counts[out[1] * VOCAB + out[2]] += 1
    return counts


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Cells with expected count < 5 are pooled, as the test requires."""
    expected = probs * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    exp = exp * obs.sum() / exp.sum()
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue)


PARAMS = [SamplingParams(3, temperature=1.0), SamplingParams(3, temperature=0.8, top_k=5, top_p=0.9)]


CASES = [(policy, params, False) for policy in ("single", "merged-concat") for params in PARAMS] + [
    ("merged-trie", PARAMS[0], False), ("merged-budget", PARAMS[1], False), ("confidence", PARAMS[0], False),
    ("single", PARAMS[0], True), ("merged-concat", PARAMS[1], True)]


@pytest.mark.slow
@pytest.mark.parametrize("policy,params,reduced", CASES,
                         ids=[f"{c[0]}-T{c[1].temperature}{'-draft-vocab' if c[2] else ''}" for c in CASES])
def test_output_distribution_equals_target(target, policy, params, reduced):
    heads = {"noisy": oracle_head(target, noise=0.3, seed=2), "random": DraftHead.random(target.model, seed=4)}
    if reduced:   # the heads draft from 5 of the 8 tokens; the target still samples from all 8
        for head, vocab in zip(heads.values(), ([1, 2, 4, 6, 7], [0, 2, 3, 5, 7])):
            head.set_draft_vocab(torch.tensor(vocab))
    decoder = Decoder(target, heads, policy, TreeSettings(8, 3, 3))
    counts = sample_joint(decoder, params)
    probs = exact_joint(target, params)
    assert chi_square_p(counts, probs) > 1e-3


def test_drafts_are_accepted_often_enough_to_matter(target):
    decoder = Decoder(target, {"noisy": oracle_head(target, noise=0.3, seed=2)}, "single", TreeSettings(8, 3, 3))
    steps = [s for seed in range(200)
             for s in decoder.generate(PROMPT, max_new_tokens=3, temperature=1.0, seed=seed, stop_on_eos=False).steps]
    assert sum(s.accepted for s in steps) / len(steps) > 0.3


@pytest.mark.slow
def test_chi_square_detects_a_wrong_distribution(target):
    """The statistical test has power: T=1 samples are rejected against the T=0.7 distribution."""
    decoder = Decoder(target, {"noisy": oracle_head(target, noise=0.3, seed=2)}, "single", TreeSettings(8, 3, 3))
    counts = sample_joint(decoder, SamplingParams(3, temperature=1.0))
    assert chi_square_p(counts, exact_joint(target, SamplingParams(3, temperature=0.7))) < 1e-3
