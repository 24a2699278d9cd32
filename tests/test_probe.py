"""The probe policy: every drafter drafts until one's trees have matched clearly more of the output, then it drafts
alone."""

import json

import pytest
import torch
from typer.testing import CliRunner

from taps_engine import Decoder, DraftHead, DraftTree, PlainDecoder, TreeSettings
from taps_engine import policies
from taps_engine.acceptance import follow_continuation
from taps_engine.cli_root import app
from taps_engine.policies import PROBE_MARGIN, PROBE_MAX_STEPS, Proposal, make_policy
from tiny import oracle_head, tiny_target


def chain(tokens: list[int]) -> DraftTree:
    """A one-path tree spelling `tokens`."""
    n = len(tokens)
    return DraftTree(torch.tensor(tokens), torch.arange(-1, n - 1), torch.arange(1, n + 1), torch.zeros(n),
                     torch.zeros(n), torch.zeros(n, dtype=torch.long))


def step(policy, plan, trees: dict[str, DraftTree], committed: list[int]):
    return policy.observe(plan, Proposal(next(iter(trees.values())), [next(iter(trees))], trees), committed)


def test_follow_continuation_counts_the_drafted_prefix_of_the_output():
    assert follow_continuation([5, 6, 7, 8], chain([5, 6, 9])) == ([0, 1], 7)
    assert follow_continuation([5, 6], chain([5, 6, 7])) == ([0, 1], -1)   # nothing matches past the known end
    assert follow_continuation([4], chain([5])) == ([], 4)


def test_probe_keeps_the_drafter_that_leads_by_the_margin():
    probe = make_policy("probe")
    plan = probe.start({"a": None, "b": None}, None)
    trees = {"a": chain([5, 9]), "b": chain([5, 6, 7])}   # b spells 2 more of each step's output than a
    for k in range(1, 10):
        plan = step(probe, plan, trees, [5, 6, 7, 8])
        if plan.drafter is not None:
            break
    assert plan.drafter == "b" and k == -(-PROBE_MARGIN // 2)
    assert plan.decision.probe_matched == {"a": k, "b": 3 * k} and plan.decision.probe_steps == k
    assert plan.decision.scores == {"a": float(k), "b": 3.0 * k} and plan.decision.assigned is False
    assert probe.propose(plan, {"b": FixedProposer(chain([1]))}, TreeSettings(4, 2, 2)).drafters == ["b"]
    assert step(probe, plan, {"a": chain([5, 6, 7])}, [5, 6, 7, 8]) is plan   # kept: no more scoring


def test_probe_keeps_the_leader_after_its_last_step():
    """Without a clear lead it keeps the leader among the drafters still active after `PROBE_MAX_STEPS` steps."""
    probe = make_policy("probe")
    for last, expected in [({"a": chain([5, 6]), "b": chain([5, 6])}, "a"), ({"b": chain([9])}, "b")]:
        plan = probe.start({"a": None, "b": None}, None)
        for _ in range(PROBE_MAX_STEPS - 2):
            plan = step(probe, plan, {"a": chain([5, 6]), "b": chain([5, 6])}, [5, 6, 7])
        plan = step(probe, plan, {"a": chain([5, 6, 7]), "b": chain([5, 6])}, [5, 6, 7])   # a leads by one
        assert plan.drafter is None
        plan = step(probe, plan, last, [5, 6, 7])   # b alone when a has failed
        assert plan.drafter == expected and plan.decision.probe_steps == PROBE_MAX_STEPS


def test_an_assigned_drafter_is_not_probed():
    plan = make_policy("probe").start({"a": None, "b": None}, "b")
    assert plan.drafter == "b" and plan.decision.assigned and not plan.decision.probe_steps


class FixedProposer:
    def __init__(self, tree: DraftTree) -> None:
        self.tree = tree

    def propose(self, settings):
        return self.tree


def test_probe_picks_the_head_that_predicts_the_target(monkeypatch):
    """A real decode: an oracle head against a random one; after probing only the oracle drafts, and the output is
    still plain greedy decoding."""
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    heads = {"random": DraftHead.random(target.model, seed=3), "oracle": oracle_head(target)}
    monkeypatch.setattr(policies, "PROBE_MAX_STEPS", 40)
    ids = [0, 17, 33, 52, 8]
    result = Decoder(target, heads, "probe", TreeSettings(8, 3, 2)).generate(ids, max_new_tokens=48,
                                                                             stop_on_eos=False)
    plain = PlainDecoder(target).generate(ids, max_new_tokens=48, stop_on_eos=False)
    decision = result.decision
    assert result.token_ids == plain.token_ids
    assert decision.drafter == "oracle" and decision.probe_matched["oracle"] >= decision.probe_matched["random"] \
        + PROBE_MARGIN
    probed = decision.probe_steps
    assert all(set(s.node_drafter) == {"oracle"} for s in result.steps[probed:])
    assert decision.to_dict()["probe_steps"] == probed > 0


@pytest.mark.parametrize("requested", [None, "noisy"])
def test_probe_at_one_drafter_left(requested):
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    heads = {"noisy": oracle_head(target, noise=2.0, seed=1)}
    result = Decoder(target, heads, "probe", TreeSettings(8, 3, 2)).generate([0, 5, 6], max_new_tokens=24,
                                                                             drafter=requested, stop_on_eos=False)
    assert result.decision.drafter == "noisy"


def test_taps_generate_routes_with_probe_by_default(models):
    """`taps generate` without --policy routes as `make run` and `taps serve` do."""
    args = ["generate", "Name a color.", "--target", str(models["target"]), "--dtype", "fp32", "--max-new-tokens", "6",
            "--no-fallback", "--json"] + [f"--drafter={name}={path}" for name, path in models["heads"].items()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["policy"] == "probe" and answer["token_ids"] and answer["decision"]["probe_steps"] >= 1
