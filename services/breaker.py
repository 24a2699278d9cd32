"""Which deployments the router currently believes are down, shared by all of its requests (a circuit breaker).

A call that fails marks its deployment down for every request, so later ones skip a dead drafter at once instead
of each waiting out `drafter_timeout_s`, and refuse new requests with UNAVAILABLE at once while the verifier is
down. After `cooldown_s` a background thread probes each down deployment (its cheap `Info` call) every
`probe_interval_s`; the first answer marks it up again, and requests in flight take a recovered drafter back at
their next step.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)


class Breaker:
    def __init__(self, probe: Callable[[str], None], cooldown_s: float, probe_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe                          # raises unless the named deployment answers
        self.cooldown_s = cooldown_s
        self.probe_interval_s = probe_interval_s
        self.clock = clock
        self._down: dict[str, float] = {}           # name -> when it was marked down
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._prober: threading.Thread | None = None

    def up(self, name: str) -> bool:
        with self._lock:
            return name not in self._down

    def down(self) -> list[str]:
        with self._lock:
            return sorted(self._down)

    def failed(self, name: str, reason: str) -> None:
        """Mark `name` down (once: repeated failures do not extend the cool-down) and start probing it."""
        with self._lock:
            if name in self._down:
                return
            self._down[name] = self.clock()
            log.warning("%s marked unavailable for all requests (%s); probing it every %.1f s after %.1f s",
                        name, reason, self.probe_interval_s, self.cooldown_s)
            if self._prober is None:
                self._prober = threading.Thread(target=self._probe_loop, name="taps-breaker", daemon=True)
                self._prober.start()
            self._wake.notify()

    def wait_up(self, name: str, timeout_s: float) -> bool:
        """Block until `name` is up again or `timeout_s` passes; True when up."""
        deadline = self.clock() + timeout_s
        with self._lock:
            while name in self._down:
                left = deadline - self.clock()
                if left <= 0:
                    return False
                self._wake.wait(min(left, self.probe_interval_s))
            return True

    def _due(self) -> list[str]:
        now = self.clock()
        return [name for name, since in self._down.items() if now - since >= self.cooldown_s]

    def _probe_loop(self) -> None:
        while True:
            with self._lock:
                while not self._down:
                    self._wake.wait()
                due = self._due()
            for name in due:
                try:
                    self.probe(name)
                except Exception as e:  # still down
                    log.debug("probe of %s failed: %s", name, e)
                    continue
                with self._lock:
                    if self._down.pop(name, None) is not None:
                        log.warning("%s answers again: back in use", name)
                    self._wake.notify_all()
            time.sleep(self.probe_interval_s)
