"""Verification steps of concurrent sessions, run as one target forward.

A verifier replica serves each session's `Verify` call in its own thread (Ray Serve's pool). The calls hand
their step to a `StepBatcher`, whose one worker thread runs whatever steps are waiting together: while a forward
runs, the next sessions' steps queue up, so concurrent streams fall into lock step without a fixed schedule. The
worker waits up to `wait_s` after the first step for more, but never for more steps than the replica has live
sessions (`peers`), so a lone stream never waits. Every forward that touches the replica's shared KV cache (prefill, catch-up, batches) holds
`forward_lock`, so slots are allocated, filled and released by one thread at a time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Job, Result]):
    job: Job
    done: threading.Event = field(default_factory=threading.Event)
    result: Result | None = None
    error: BaseException | None = None


class StepBatcher(Generic[Job, Result]):
    """`submit` blocks until `run` has processed the job in some batch of at most `max_batch` jobs."""

    def __init__(self, run: Callable[[Sequence[Job]], Sequence[Result]], max_batch: int, wait_s: float,
                 forward_lock: threading.Lock, peers: Callable[[], int]) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run = run
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.forward_lock = forward_lock
        self.peers = peers
        self.batches = 0          # forwards run, and the steps they held (the mean batch size is their ratio)
        self.steps = 0
        self._queue: list[_Pending] = []
        self._ready = threading.Condition()
        threading.Thread(target=self._work, name="step-batcher", daemon=True).start()

    def submit(self, job: Job) -> Result:
        pending = _Pending(job)
        with self._ready:
            self._queue.append(pending)
            self._ready.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _take(self) -> list[_Pending]:
        with self._ready:
            while not self._queue:
                self._ready.wait()
            deadline = time.monotonic() + self.wait_s
            wanted = min(self.max_batch, self.peers())
            while len(self._queue) < wanted and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(left)
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            try:
                with self.forward_lock:
                    results = self.run([p.job for p in batch])
                for pending, result in zip(batch, results):
                    pending.result = result
            except BaseException as e:   # every caller of the batch gets the error; the worker keeps serving
                for pending in batch:
                    pending.error = e
            self.batches += 1
            self.steps += len(batch)
            for pending in batch:
                pending.done.set()
