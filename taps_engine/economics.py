"""What a speculative step is worth on this machine: how many draft nodes to verify, when to stop drafting, and whether
to speculate at all.

Cost-aware trees (`CostModel`): a step's expected yield is 1 + the sum of its verified nodes' acceptance
probabilities, its cost the drafting time plus the verify cost c(n) of the machine (taps_engine/costs.py). Of the
drafted nodes ranked by confidence, each step verifies the n that maximize expected tokens per second (the largest n
within RATE_TOLERANCE of the best: near the peak the rate is flat), and drafting stops expanding once the best
frontier node cannot pay for another pass. A node's acceptance probability is its draft confidence mapped through a
calibration learned from the steps already verified.

Fallback (`StepEconomics`): a drafter that does not fit a prompt (a chat head on code, say) commits little more than
one token per step while each step costs drafting plus a tree verification. Comparing the tokens per second of
recent speculative steps with those of plain steps tells when it loses; the request then decodes plainly for a while
and probes again, so a poor fit costs a few steps, not the whole request. Output is unaffected: plain steps verify
an empty tree.
"""

from __future__ import annotations

import copy
import statistics
import threading
from collections import deque
from dataclasses import replace

import torch

from .tree import DraftTree, TreeSettings

CALIBRATION_BINS = 20
PRIOR_WEIGHT = 4.0     # pseudo-observations pulling an empty bin towards the confidence itself
RATE_TOLERANCE = 0.02  # modeled rates this close to the best are a tie, settled towards the larger tree


class Calibration:
    """P(a drafted node is accepted | its draft confidence), binned, learned from verified steps.

    One calibration may learn from concurrent requests (a router's); updates are serialized so no count is lost.
    """

    def __init__(self, bins: int = CALIBRATION_BINS) -> None:
        self.accepted = torch.zeros(bins)
        self.total = torch.zeros(bins)
        self._lock = threading.Lock()

    def _bins(self, confidence: torch.Tensor) -> torch.Tensor:
        return (confidence.clamp(0, 1) * len(self.total)).long().clamp(max=len(self.total) - 1)

    def update(self, confidence: torch.Tensor, accepted: torch.Tensor) -> None:
        bins = self._bins(confidence)
        with self._lock:
            self.total.index_add_(0, bins, torch.ones_like(confidence))
            self.accepted.index_add_(0, bins, accepted.float())

    def __call__(self, confidence: torch.Tensor) -> torch.Tensor:
        bins = self._bins(confidence)
        return (self.accepted[bins] + PRIOR_WEIGHT * confidence) / (self.total[bins] + PRIOR_WEIGHT)

    def curve(self) -> list[dict]:
        """Per bin: its confidence range, the nodes seen and the share accepted (for plots and reports)."""
        width = 1 / len(self.total)
        return [{"low": round(i * width, 3), "high": round((i + 1) * width, 3), "nodes": int(self.total[i]),
                 "accepted": float(self.accepted[i] / self.total[i]) if self.total[i] else None}
                for i in range(len(self.total))]


class CostModel:
    """Prunes drafted trees to what pays on this machine, and tells drafting when to stop expanding.

    `calibration`: one shared with other cost models (a router's requests each have their own step rates, and
    learn the acceptance of the same drafters together); default a fresh one. `tolerance`: `best_size`'s.
    """

    def __init__(self, verify_ms: dict[int, float], calibration: Calibration | None = None,
                 tolerance: float = RATE_TOLERANCE) -> None:
        sizes = sorted(verify_ms)
        top = sizes[-1]
        # c(n) for n = 1 .. a generous maximum, interpolated between measured sizes
        self.cost = torch.tensor([_interpolate(verify_ms, sizes, n) for n in range(1, 4 * top + 1)])
        self.calibration = calibration if calibration is not None else Calibration()
        self.tolerance = tolerance
        self.rate = None           # recent tokens per ms of whole steps
        self.pass_ms = None        # recent drafting time per expansion pass

    def fork(self) -> CostModel:
        """A model for another request: this one's cost table and calibration, step rates of its own."""
        model = copy.copy(self)
        model.rate = model.pass_ms = None
        return model

    def settings(self, tree: TreeSettings) -> TreeSettings:
        """The tree to draft this step: stop expanding below the confidence a pass is worth."""
        if self.rate is None or self.pass_ms is None:
            return tree
        return replace(tree, stop_below=min(1.0, self.pass_ms * self.rate))

    def rates(self, ranked: torch.Tensor, fixed_ms: float) -> torch.Tensor:
        """Expected tokens per ms of a step verifying the first n of `ranked` node confidences (highest first),
        for n = 0, 1, ...: (1 + the sum of their acceptance probabilities) / (fixed_ms + c(n + 1))."""
        gain = 1 + torch.cat([torch.zeros(1), self.calibration(ranked).cumsum(0)])
        n_max = min(len(ranked), len(self.cost) - 1)
        return gain[:n_max + 1] / (fixed_ms + self.cost[:n_max + 1])

    def prune(self, tree: DraftTree, draft_ms: float) -> DraftTree:
        """The best-ranked n nodes, n maximizing the step's expected tokens per ms (`rates`) after drafting."""
        if len(tree) == 0:
            return tree
        order = torch.sort(-tree.scores, stable=True).indices
        return tree.select(order[:best_size(self.rates(tree.confidences[order], draft_ms), self.tolerance)])

    def observe(self, tree: DraftTree, accepted_nodes: list[int], tokens: int, step_ms: float,
                draft_ms: float) -> None:
        """Learn from a verified step: calibration, the rate of whole steps, the cost of a drafting pass."""
        if len(tree):
            accepted = torch.zeros(len(tree), dtype=torch.bool)
            accepted[accepted_nodes] = True
            self.calibration.update(tree.confidences, accepted)
            passes = max(1, tree.max_depth)
            self.pass_ms = _ema(self.pass_ms, draft_ms / passes)
        self.rate = _ema(self.rate, tokens / step_ms)


def best_size(rates: torch.Tensor, tolerance: float = RATE_TOLERANCE) -> int:
    """The largest node count whose rate (`CostModel.rates`) is within `tolerance` of the highest, at least one
    node: the calibration learns only from verified nodes. The rate is flat near its peak, where the model's
    errors (calibration, the cost curve's noise) exceed the differences, so a tie goes to the tree that commits
    more tokens per step and gives the calibration more nodes to learn from."""
    candidates = rates[1:]
    return 1 + int(torch.nonzero(candidates >= (1 - tolerance) * candidates.max()).max())


def _ema(old: float | None, new: float, weight: float = 0.2) -> float:
    return new if old is None else (1 - weight) * old + weight * new


def _interpolate(curve: dict[int, float], sizes: list[int], n: int) -> float:
    lo = max((s for s in sizes if s <= n), default=sizes[0])
    hi = min((s for s in sizes if s >= n), default=sizes[-1])
    if lo == hi:
        if n <= sizes[-1]:
            return curve[lo]
        lo, hi = sizes[-2], sizes[-1]
    return curve[lo] + (curve[hi] - curve[lo]) * (n - lo) / (hi - lo)


class StepEconomics:
    """Speculate or step plainly, decided from the last `window` speculative steps and measured plain steps.

    The first full window is followed by `measure` plain steps (what a plain step costs on this machine, for this
    prompt length); from then on, speculation losing (fewer tokens per second than plain) buys `backoff` plain
    steps, doubling up to `max_backoff` while it keeps losing and reset when a probe wins.

    "Losing" allows for the window's noise: a step commits 1 to depth + 1 tokens and its time varies with the
    machine's load, so six steps of a drafter that pays can fall below break-even by chance, and each such verdict
    costs `backoff` or more steps at one token.
    Each step's gain is the tokens it committed beyond what plain steps commit in its time; speculation loses when
    the window's mean gain is below zero by more than `noise` standard errors (results/engine/README.md, "The
    fallback's noise allowance").
    """

    def __init__(self, window: int = 6, measure: int = 2, backoff: int = 8, max_backoff: int = 64,
                 noise: float = 1.0) -> None:
        if window < 2:
            raise ValueError("the fallback's window needs at least two steps to estimate its noise")
        self.window = window
        self.noise = noise
        self.measure = measure
        self.base_backoff = backoff
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.recent: deque[tuple[int, float]] = deque(maxlen=window)   # (tokens, seconds) of speculative steps
        self.plain_seconds: float | None = None                          # running mean of a plain step
        self.plain_count = 0
        self.plain_left = 0

    def speculate(self) -> bool:
        return self.plain_left == 0

    def record(self, tokens: int, seconds: float, speculative: bool) -> None:
        if not speculative:
            self.plain_count += 1
            mean = self.plain_seconds or 0.0
            self.plain_seconds = mean + (seconds - mean) / self.plain_count
            self.plain_left = max(0, self.plain_left - 1)
            if self.plain_left == 0:
                self.recent.clear()        # probe again with a fresh window
            return
        self.recent.append((tokens, seconds))
        if len(self.recent) < self.window:
            return
        if self.plain_seconds is None:
            self.plain_left = self.measure
            return
        gains = [tokens - seconds / self.plain_seconds for tokens, seconds in self.recent]
        if statistics.fmean(gains) + self.noise * statistics.stdev(gains) / len(gains) ** 0.5 < 0:
            self.plain_left = self.backoff
            self.backoff = min(self.max_backoff, self.backoff * 2)
        else:
            self.backoff = self.base_backoff
        self.recent.clear()
