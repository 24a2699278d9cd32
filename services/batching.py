"""Steps of concurrent sessions (verification, drafting), run as one forward.

A replica serves each session's call in its own thread (Ray Serve's pool). The calls hand their step to a
`StepBatcher`: the first caller that finds no batch running leads, runs whatever steps are waiting (its own
among them) as one batch, and hands each caller its result; the others wait. While a forward runs, the next
sessions' steps queue up, so concurrent streams fall into lock step without a fixed schedule, and a lone stream
runs its step in its own thread with no hand-off. A leader waits up to `wait_s` for more steps, but never for
more than the replica has live sessions (`peers`), so a lone stream never waits. Every forward that touches the
replica's shared KV cache (prefill, catch-up, batches) holds `forward_lock`, so slots are allocated, filled and
released by one thread at a time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def skipping_dropped(jobs: Sequence[Job], dropped: Callable[[Job], bool],
                     run: Callable[[list[Job]], Sequence[Result]]) -> list[Result | None]:
    """`run` over the jobs whose session the replica still holds; None for the others (a session dropped while
    its step waited: its slot may belong to another session now). Called under `forward_lock`, where sessions
    are dropped, so `dropped` cannot change in between."""
    held = [job for job in jobs if not dropped(job)]
    done = iter(run(held) if held else ())
    return [None if dropped(job) else next(done) for job in jobs]


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
        self.busy_s = 0.0         # seconds spent running them (what a step costs the replica, without hops)
        self._queue: list[_Pending] = []
        self._leading = False
        self._changed = threading.Condition()

    def submit(self, job: Job) -> Result:
        pending = _Pending(job)
        with self._changed:
            self._queue.append(pending)
            self._changed.notify_all()
        while not pending.done.is_set():
            batch = self._lead()
            if batch:
                self._run(batch)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self) -> list[_Pending]:
        """The batch to run when this caller becomes the leader; [] after waiting while another one leads."""
        with self._changed:
            if self._leading:
                self._changed.wait()
                return []
            self._leading = True
            deadline = time.monotonic() + self.wait_s
            wanted = min(self.max_batch, self.peers())
            while len(self._queue) < wanted and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            return batch

    def _run(self, batch: list[_Pending]) -> None:
        try:
            with self.forward_lock:
                start = time.perf_counter()
                try:
                    results = self.run([p.job for p in batch])
                finally:
                    self.busy_s += time.perf_counter() - start
            for pending, result in zip(batch, results):
                pending.result = result
        except BaseException as e:   # every caller of the batch gets the error; the next leader carries on
            for pending in batch:
                pending.error = e
        with self._changed:
            self.batches += 1
            self.steps += len(batch)
            for pending in batch:
                pending.done.set()
            self._leading = False
            self._changed.notify_all()
