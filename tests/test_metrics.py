"""Metric helpers count what their names say."""

import pytest

from taps_engine.decoding import GenerationResult, StepRecord
from taps_engine.metrics import (acceptance_rate_by_depth, drafter_selection_shares, mean_acceptance_length,
                                 node_statistics, per_sample_acceptance_length, summarize)


def step(accepted, drafters, depths=(1, 2, 3), accepted_nodes=(), conf=0.5, ent=1.0):
    return StepRecord(accepted=accepted, bonus_token=0, drafters=list(drafters), tree_size=len(depths),
                      node_depth=list(depths), node_confidence=[conf] * len(depths), node_entropy=[ent] * len(depths),
                      node_accepted=[i in accepted_nodes for i in range(len(depths))],
                      node_drafter=[drafters[0]] * len(depths))


def result(steps, n_tokens):
    return GenerationResult([0], list(range(n_tokens)), "", "length", steps, "single", {}, 1.0)


def test_metrics_on_known_records():
    a = result([step(2, ["math"], accepted_nodes=(0, 1)), step(0, ["math"])], 5)    # tau 2.0
    b = result([step(3, ["chat"], accepted_nodes=(0, 1, 2)), step(1, ["chat", "math"], accepted_nodes=(0,))], 7)
    assert mean_acceptance_length([a, b]) == pytest.approx((3 + 1 + 4 + 2) / 4)
    assert per_sample_acceptance_length([a, b]) == pytest.approx((2.0 + 3.0) / 2)
    # depth 1 reached by 4 steps, accepted in 3; depth 2 reached by 3 (accepted>=1), accepted in 2; depth 3: 2 -> 1
    assert acceptance_rate_by_depth([a, b]) == pytest.approx({1: 3 / 4, 2: 2 / 3, 3: 1 / 2})
    assert drafter_selection_shares([a, b]) == pytest.approx({"math": 3 / 4, "chat": 2 / 4})
    stats = node_statistics([result([step(1, ["m"], accepted_nodes=(0,), conf=0.9, ent=0.2)], 2)])
    assert stats["accepted"]["count"] == 1 and stats["rejected"]["count"] == 2
    assert stats["accepted"]["confidence"] == pytest.approx(0.9)
    summary = summarize([a, b])
    assert summary["n_steps"] == 4 and summary["new_tokens"] == 12


def test_empty_results():
    assert mean_acceptance_length([]) == 0.0
    assert acceptance_rate_by_depth([]) == {}
    assert drafter_selection_shares([]) == {}


def test_a_step_cut_by_max_new_tokens_counts_only_what_it_kept():
    """τ counts committed tokens: an oracle drafter accepts whole trees, but the last step is cut at the limit."""
    from taps_engine import Decoder
    from taps_engine.tree import TreeSettings
    from tiny import oracle_head, tiny_target

    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    result = Decoder(target, {"o": oracle_head(target)}, "single", TreeSettings(20, 4, 1)).generate(
        [0, 5, 9, 12], max_new_tokens=5, stop_on_eos=False)
    assert len(result.token_ids) == 5
    assert sum(s.acceptance_length for s in result.steps) == 5 - 1   # the prefill's token has no step
    assert result.steps[-1].acceptance_length < result.steps[-1].accepted + 1, "the last step was cut"
