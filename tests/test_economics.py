"""When speculation stops paying, a request steps plainly for a while and probes again."""

from taps_engine.economics import StepEconomics


def run(economics: StepEconomics, spec: tuple[int, float], plain_s: float, steps: int) -> list[bool]:
    """Feed `steps` steps with fixed costs: speculative steps commit spec[0] tokens in spec[1] seconds."""
    trace = []
    for _ in range(steps):
        speculative = economics.speculate()
        trace.append(speculative)
        economics.record(spec[0] if speculative else 1, spec[1] if speculative else plain_s, speculative)
    return trace


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
