"""TAPS's own log lines (router, drafter and verifier replicas) on stderr, at the level the serving config names.

In a replica, Ray forwards stderr to the driver, so `taps serve` shows every replica's warnings (a drafter marked
down, Redis bypassed, a verifier retried) with Ray's replica prefix; on a cluster they land in the replica's logs.
"""

from __future__ import annotations

import logging
import sys
from enum import Enum

TAPS_LOGGERS = ("services", "taps_engine", "training")


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def configure_logging(level: LogLevel | str) -> None:
    """One stderr handler per TAPS logger at `level` (idempotent: replicas call it once per constructor)."""
    numeric = getattr(logging, LogLevel(level).value.upper())
    for name in TAPS_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(numeric)
        logger.propagate = False
        if not any(getattr(h, "taps", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            handler.taps = True
            logger.addHandler(handler)
