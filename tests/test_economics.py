"""When speculation stops paying, a request steps plainly for a while and probes again."""

import itertools
import time
from typing import Iterator

import pytest
import torch

from taps_engine import Decoder, TreeSettings
from taps_engine.costs import SIZES, measure_verify_costs, verify_costs
from taps_engine.economics import Calibration, CostModel, StepEconomics, best_size
from taps_engine.tree import DraftTree
from tiny import oracle_head, tiny_target


def run(economics: StepEconomics, spec: tuple[int, float], plain_s: float, steps: int) -> list[bool]:
    """Feed `steps` steps with fixed costs: speculative steps commit spec[0] tokens in spec[1] seconds."""
    trace = []
    for _ in range(steps):
        speculative = economics.speculate()
        trace.append(speculative)
        economics.record(spec[0] if speculative else 1, spec[1] if speculative else plain_s, speculative)
    return trace


def run_tokens(economics: StepEconomics, tokens: Iterator[int], spec_s: float, plain_s: float, steps: int
               ) -> list[bool]:
    """Like `run`, the speculative steps committing the next of `tokens` each."""
    trace = []
    for _ in range(steps):
        speculative = economics.speculate()
        trace.append(speculative)
        economics.record(next(tokens) if speculative else 1, spec_s if speculative else plain_s, speculative)
    return trace


def test_a_paying_drafters_unlucky_window_is_within_its_noise():
    """Break-even is 2 tokens a step; windows alternate means of 3.5 and 1.83 (2.67 overall): the low ones are
    chance, not a misfit, and backing off on them would give up a winning drafter for 8+ steps each time."""
    windows = [4, 4, 3, 3, 4, 3] + [1, 1, 3, 1, 1, 4]
    trace = run_tokens(StepEconomics(), itertools.cycle(windows), spec_s=0.1, plain_s=0.05, steps=80)
    assert trace[6:8] == [False, False] and all(trace[8:])
    naive = run_tokens(StepEconomics(noise=0), itertools.cycle(windows), spec_s=0.1, plain_s=0.05, steps=80)
    assert not all(naive[8:])


def test_a_losing_drafter_backs_off_despite_noise():
    economics = StepEconomics()
    trace = run_tokens(economics, itertools.cycle([1, 1, 2, 1, 1, 1]), spec_s=0.1, plain_s=0.05, steps=80)
    assert trace.count(False) >= 50 and economics.backoff > 8


def test_a_window_of_one_step_is_refused():
    with pytest.raises(ValueError, match="two steps"):
        StepEconomics(window=1)


def test_winning_speculation_keeps_speculating_after_one_measurement():
    trace = run(StepEconomics(window=4, measure=2), spec=(3, 0.1), plain_s=0.05, steps=40)
    assert trace[:4] == [True] * 4 and trace[4:6] == [False, False]   # the plain cost, measured once
    assert all(trace[6:])


def test_losing_speculation_backs_off_and_probes_again():
    economics = StepEconomics(window=4, measure=2, backoff=4, max_backoff=16)
    trace = run(economics, spec=(1, 0.1), plain_s=0.05, steps=60)
    plain = trace.count(False)
    assert plain >= 40                       # most steps plain once speculation is found losing
    assert trace[-20:].count(True) >= 4      # but it is still probed
    assert economics.backoff == 16           # the back-off grew while every probe lost


def test_back_off_resets_when_a_probe_wins():
    economics = StepEconomics(window=2, measure=1, backoff=2, max_backoff=8)
    run(economics, spec=(1, 0.1), plain_s=0.05, steps=20)
    assert economics.backoff > 2
    while not economics.speculate():
        economics.record(1, 0.05, speculative=False)
    run(economics, spec=(4, 0.1), plain_s=0.05, steps=2)
    assert economics.backoff == 2 and economics.speculate()


def chain(confidences: list[float]) -> DraftTree:
    n = len(confidences)
    scores = torch.tensor(confidences).log()
    return DraftTree(tokens=torch.arange(n), parents=torch.arange(n) - 1, depths=torch.arange(1, n + 1),
                     scores=scores, entropies=torch.zeros(n), sources=torch.zeros(n, dtype=torch.long))


def test_pruning_follows_the_machines_cost_curve():
    tree = chain([0.9, 0.8, 0.6, 0.3, 0.1, 0.05])
    free = CostModel({1: 10.0, 64: 10.0})          # verifying more costs nothing: keep every node with p > 0
    assert len(free.prune(tree, draft_ms=5.0)) == 6
    steep = CostModel({1: 10.0, 2: 40.0, 64: 1900.0})  # a node costs 3 plain steps: only the likeliest pays
    assert len(steep.prune(tree, draft_ms=5.0)) == 1
    middle = CostModel({1: 10.0, 4: 12.0, 8: 30.0, 64: 300.0})
    assert 1 < len(middle.prune(tree, draft_ms=5.0)) < 6


def test_a_tie_in_modeled_rate_goes_to_the_larger_tree():
    rates = torch.tensor([0.020, 0.0300, 0.0310, 0.0306, 0.0290])   # n = 0 .. 4 nodes; the best is n = 2
    assert best_size(rates, tolerance=0.0) == 2
    assert best_size(rates, tolerance=0.02) == 3                       # 0.0306 is within 2% of 0.0310
    assert best_size(rates, tolerance=0.1) == 4
    assert best_size(torch.tensor([0.05, 0.01, 0.04])) == 2           # never zero nodes, whatever the rates


def test_a_slow_spell_of_the_machine_costs_each_size_one_sample(monkeypatch):
    from taps_engine.verifier import TargetVerifier

    target = tiny_target("llama", layers=1)
    calls, verify = itertools.count(), TargetVerifier.verify
    spell = range(len(SIZES) + 3, 2 * len(SIZES) + 2)      # fewer calls in a row than sizes, after the warm-up

    def slow_in_the_spell(self, root, tree):
        if next(calls) in spell:
            time.sleep(0.2)
        return verify(self, root, tree)

    monkeypatch.setattr(TargetVerifier, "verify", slow_in_the_spell)
    curve = measure_verify_costs(target)
    assert max(curve.values()) < 100, curve


def test_a_forked_cost_model_shares_costs_and_calibration_not_rates():
    model = CostModel({1: 10.0, 8: 20.0})
    tree = chain([0.9, 0.5])
    model.observe(tree, [0], tokens=2, step_ms=30.0, draft_ms=5.0)
    fork = model.fork()
    assert fork.calibration is model.calibration and fork.cost is model.cost
    assert (fork.rate, fork.pass_ms) == (None, None) and model.rate == pytest.approx(2 / 30)


def test_an_unwritable_cache_still_gives_the_measured_cost_curve(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("a file where TAPS_HOME's directory should be")
    monkeypatch.setenv("TAPS_HOME", str(home))
    target = tiny_target("llama", layers=1)
    with pytest.warns(UserWarning, match="could not cache the verify cost curve"):
        curve = verify_costs(target)
    assert sorted(curve) == [1, 2, 4, 8, 16, 32, 64] and all(ms > 0 for ms in curve.values())


def test_calibration_learns_acceptance_per_confidence():
    calibration = Calibration()
    conf = torch.full((200,), 0.85)
    calibration.update(conf, torch.arange(200) < 20)          # overconfident drafts: 10% accepted
    assert calibration(torch.tensor([0.85])).item() == pytest.approx((20 + 4 * 0.85) / 204)
    assert calibration(torch.tensor([0.3])).item() == pytest.approx(0.3)   # no data: the confidence itself
    assert calibration.curve()[17]["nodes"] == 200


def test_drafting_stops_when_no_frontier_node_can_pay():
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    from taps_engine import Drafter
    from taps_engine.verifier import TargetVerifier

    drafter = Drafter("o", oracle_head(target, noise=0.5, seed=1), target)
    features, _ = TargetVerifier(target).prefill([0, 6, 7, 8])
    drafter.extend([6, 7, 8, 9], features)
    full = drafter.propose(TreeSettings(40, 4, 3))
    assert full.max_depth == 5
    assert drafter.propose(TreeSettings(40, 4, 3, stop_below=1.0)).max_depth == 1


@pytest.mark.parametrize("policy", ["single", "confidence", "merged-trie", "sticky", "probe"])
def test_cost_aware_trees_stay_lossless(policy, tmp_path, monkeypatch):
    monkeypatch.setenv("TAPS_HOME", str(tmp_path))   # the measured cost curve is cached here
    target = tiny_target("qwen3", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    heads = {"oracle": oracle_head(target), "noisy": oracle_head(target, noise=0.5, seed=1)}
    decoder = Decoder(target, heads, policy, TreeSettings(40, 4, 6, cost_aware=True))
    plain = Decoder(target, {}, "plain")
    for ids in ([0, 5, 9, 13], [0, 44, 2, 71, 30, 8]):
        result = decoder.generate(ids, max_new_tokens=40, stop_on_eos=False)
        assert result.token_ids == plain.generate(ids, max_new_tokens=40, stop_on_eos=False).token_ids
        assert all(1 <= s.tree_size <= 39 for s in result.steps)
    assert list((tmp_path / "costs").glob("*.json"))
    assert decoder.costs.calibration.total.sum() > 0


def test_reports_name_the_machine_in_words():
    from taps_engine.costs import machine, machine_line

    capped = {"cpu": "Xeon", "native_bf16": True, "isa_limits": {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "cores": 2,
              "torch_threads": 1, "gpu": None}
    assert machine_line(capped) == "Xeon, native bf16, capped at ONEDNN_MAX_CPU_ISA=AVX2, 2 cores, 1 torch threads"
    assert machine_line({**capped, "native_bf16": False, "isa_limits": {}, "gpu": "H200"}) == \
        "Xeon, no native bf16, 2 cores, 1 torch threads, GPU H200"
    assert machine_line({**capped, "bf16_flags": ["avx512_bf16"]}).startswith("Xeon, native bf16 (avx512_bf16), capped")
    assert machine_line().startswith(machine()["cpu"])


def test_the_cpu_is_named_with_its_generation():
    from taps_engine.costs import cpu_model

    two = "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n\n" \
          "processor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: Other\n"
    assert cpu_model(two) == "AMD EPYC (family 26, model 2)"
    assert cpu_model("model name\t: Neoverse\n") == "Neoverse"
