"""Naming drafters on command lines and finding the trained ones a target comes with.

The default target's drafters ship with the package (`taps_engine/drafters/<target>/<name>/`: bf16 weights, a draft
vocabulary, and their provenance in train_log.json, written by `taps export`), so a fresh clone decodes with
trained heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .target import DEFAULT_TARGET, is_default_target

RANDOM = "random"   # a PATH that asks for an untrained head (smoke runs, benchmarks of the overhead floor)
SHIPPED = Path(__file__).parent / "drafters"
# the drafters used when none is named: the best measured on the math sets, and the mixed head with the chat data
# whose recipe fits the hour (as good as the chat heads on MT-Bench, as the math head on math); routing between them is
# level with routing between the earlier defaults (results/training/README.md, round 7)
DEFAULTS = {"math": "eagle2-mixed-one-sitting", "chat": "eagle2-mixed-chat-hour-draft-ce"}


def parse_drafter_specs(specs: Iterable[str], allow_random: bool = False) -> dict[str, Path | None]:
    """`NAME=PATH` strings -> {name: path}; with `allow_random`, PATH `random` maps to None (an untrained head)."""
    out: dict[str, Path | None] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--drafter must look like NAME=PATH, got {spec!r}")
        if name in out:
            raise ValueError(f"drafter {name!r} given twice")
        if allow_random and path == RANDOM:
            out[name] = None
            continue
        resolved = Path(path).expanduser()
        if not resolved.exists():
            raise ValueError(f"drafter {name!r}: {path} does not exist")
        out[name] = resolved
    return out


def shipped_drafters(target: str) -> dict[str, Path]:
    """Every drafter shipped for `target` (the default target's aliases included), by directory name."""
    if not is_default_target(target):
        return {}
    root = SHIPPED / DEFAULT_TARGET
    return {d.name: d for d in sorted(root.iterdir()) if (d / "config.json").exists()} if root.is_dir() else {}


def default_drafters(target: str) -> dict[str, Path]:
    """The math and chat drafters shipped for `target`; empty for targets without shipped drafters."""
    shipped = shipped_drafters(target)
    return {name: shipped[directory] for name, directory in DEFAULTS.items() if directory in shipped}
