"""Naming drafters on command lines and finding the trained ones a target comes with."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .settings import taps_home
from .target import DEFAULT_TARGET

RANDOM = "random"   # a PATH that asks for an untrained head (smoke runs, benchmarks of the overhead floor)
DEFAULT_NAMES = ("math", "chat")


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


def default_drafters(target: str) -> dict[str, Path]:
    """The trained math/chat heads for `target` found in the cache dir (`taps train` with configs/smollm2/ puts
    them there); empty for other targets or before training."""
    if target != DEFAULT_TARGET:
        return {}
    found = {name: taps_home() / "drafters" / f"smollm2-eagle2-{name}" for name in DEFAULT_NAMES}
    return {name: path for name, path in found.items() if (path / "config.json").exists()}
