"""Whether speculation pays for the request at hand, from its own measured steps.

A drafter that does not fit a prompt (a chat head on code, say) commits little more than one token per step while
each step costs drafting plus a tree verification. Comparing the tokens per second of recent speculative steps
with those of plain steps tells when it loses; the request then decodes plainly for a while and probes again, so a
poor fit costs a few steps, not the whole request. Output is unaffected: plain steps verify an empty tree.
"""

from __future__ import annotations

from collections import deque


class StepEconomics:
    """Speculate or step plainly, decided from the last `window` speculative steps and measured plain steps.

    The first full window is followed by `measure` plain steps (what a plain step costs on this machine, for this
    prompt length); from then on, speculation losing (fewer tokens per second than plain) buys `backoff` plain
    steps, doubling up to `max_backoff` while it keeps losing and reset when a probe wins.
    """

    def __init__(self, window: int = 6, measure: int = 2, backoff: int = 8, max_backoff: int = 64) -> None:
        self.window = window
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
        rate = sum(t for t, _ in self.recent) / sum(s for _, s in self.recent)
        if self.plain_seconds is None:
            self.plain_left = self.measure
            return
        if rate * self.plain_seconds < 1.0:
            self.plain_left = self.backoff
            self.backoff = min(self.max_backoff, self.backoff * 2)
        else:
            self.backoff = self.base_backoff
        self.recent.clear()
