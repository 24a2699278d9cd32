"""Benchmark prompts read from the data dir (the evaluation issue extends this to full benchmark runs)."""

from __future__ import annotations

import json
from pathlib import Path

from .settings import data_dir

BENCHMARK_FILES = {"gsm8k": ("gsm8k/test.jsonl", "question"), "mt_bench": ("mt_bench/question.jsonl", "turns")}


def benchmark_prompts(name: str, n: int, root: Path | None = None) -> list[str]:
    """The first `n` user prompts of a benchmark (MT-Bench: first turns)."""
    if name not in BENCHMARK_FILES:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARK_FILES)}")
    relative, field = BENCHMARK_FILES[name]
    path = (root or data_dir()) / relative
    if not path.exists():
        raise ValueError(f"{path} not found: set TAPS_DATA_DIR to the folder holding {relative}")
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)[field]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{number}: expected a JSON object with {field!r} ({e})") from e
        prompts.append(value[0] if field == "turns" else value)
        if len(prompts) == n:
            break
    return prompts
