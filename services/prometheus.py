"""The router's Prometheus metrics (Ray Serve custom metrics, exported by every Ray node's metrics agent).

What an operator needs to see whether speculation pays and routing works: acceptance length per verify step (its
histogram's sum/count is the mean τ), acceptance per draft depth, which drafters the steps used, assignment-cache
hits and misses, drafters dropped mid-request, replica state rebuilt (affinity misses), and the latency of a decoding step as the router sees it
(drafting + verification round trips).
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

from taps_engine.decoding import GenerationResult, StepRecord
from taps_engine.metrics import depth_counts

_LATENCY_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
_LENGTHS = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16]


class RouterMetrics:
    def __init__(self) -> None:
        self.requests = Counter("taps_requests_total", description="Generation requests by policy and outcome.",
                                tag_keys=("policy", "outcome"))
        self.acceptance_length = Histogram(
            "taps_acceptance_length", description="Tokens committed per verify step (mean = sum / count: tau).",
            boundaries=_LENGTHS, tag_keys=("policy",))
        self.depth = Counter("taps_draft_depth_total",
                             description="Verify steps whose tree reached a depth with the depth above accepted "
                                         "(outcome=reached), and those accepting it (outcome=accepted).",
                             tag_keys=("depth", "outcome"))
        self.selections = Counter("taps_drafter_selections_total", description="Verify steps using each drafter.",
                                  tag_keys=("drafter",))
        self.assignments = Counter("taps_assignment_cache_total",
                                   description="Sticky assignment-cache lookups by result (hit or miss).",
                                   tag_keys=("result",))
        self.unavailable = Counter("taps_drafter_unavailable_total",
                                   description="Drafters dropped mid-request after failing.", tag_keys=("drafter",))
        self.state_lost = Counter("taps_session_state_lost_total",
                                  description="Replica session state that had to be rebuilt (verifier: cache "
                                              "re-prefills; drafter: history resends after StateMiss).",
                                  tag_keys=("component",))
        self.step_latency = Histogram("taps_step_latency_ms", description="Router-side latency of one decoding "
                                      "step (draft + verify round trips).", boundaries=_LATENCY_MS,
                                      tag_keys=("policy",))

    def step(self, policy: str, step: StepRecord, seconds: float) -> None:
        self.acceptance_length.observe(step.acceptance_length, tags={"policy": policy})
        self.step_latency.observe(seconds * 1000, tags={"policy": policy})
        for name in set(step.drafters):
            self.selections.inc(tags={"drafter": name})

    def finished(self, policy: str, result: GenerationResult) -> None:
        self.requests.inc(tags={"policy": policy, "outcome": "ok"})
        reached, accepted = depth_counts([result])
        for d, n in reached.items():
            self.depth.inc(n, tags={"depth": str(d), "outcome": "reached"})
            if accepted[d]:
                self.depth.inc(accepted[d], tags={"depth": str(d), "outcome": "accepted"})
        for name in result.decision.unavailable:
            self.unavailable.inc(tags={"drafter": name})

    def failed(self, policy: str, outcome: str) -> None:
        self.requests.inc(tags={"policy": policy, "outcome": outcome})

    def state_losses(self, verifier_rebuilds: int, drafter_resends: dict[str, int]) -> None:
        if verifier_rebuilds:
            self.state_lost.inc(verifier_rebuilds, tags={"component": "verifier"})
        for name, n in drafter_resends.items():
            if n:
                self.state_lost.inc(n, tags={"component": f"drafter-{name}"})

    def assignment(self, hit: bool) -> None:
        self.assignments.inc(tags={"result": "hit" if hit else "miss"})
