"""Evaluation benchmarks read from the data dir: prompts (user turns) and gold final answers, in the paper's order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .jsonrecords import JsonRecords
from .settings import data_dir

BENCHMARKS = ("mt_bench", "gsm8k", "math500", "svamp")  # the paper's column order

BENCHMARK_FILES = {
    "mt_bench": "mt_bench/question.jsonl",
    "gsm8k": "gsm8k/test.jsonl",
    "math500": "math500/test.jsonl",
    "svamp": "svamp/SVAMP.json",
}


@dataclass(frozen=True)
class BenchmarkItem:
    """One evaluation prompt: the user turns to send and, for the math sets, the gold final answer."""

    benchmark: str
    id: str  # stable id from the file (question_id, unique_id, ID, or 1-based line number for GSM8K)
    turns: tuple[str, ...]  # user turns: 2 for MT-Bench, 1 otherwise
    answer: str | None  # gold final answer as a string; None for MT-Bench (judged, not matched)
    category: str | None = None  # MT-Bench category, MATH-500 subject, SVAMP Type


class _BadRecord(ValueError):
    """A record lacks a field or has the wrong type; the caller adds `path:line`."""


def _field(record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    """`record[key]` checked for type, so bad data gives one clear message instead of a stack trace."""
    if not isinstance(record, dict):
        raise _BadRecord(f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise _BadRecord(f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _BadRecord(f"field {key!r} should be {names}, got {type(value).__name__}")
    return value


def _optional_str(record: dict, key: str) -> str | None:
    value = record.get(key)
    return value if isinstance(value, str) else None


def _mt_bench(record: Any, line: int) -> BenchmarkItem:
    turns = _field(record, "turns", list)
    if not turns or not all(isinstance(t, str) for t in turns):
        raise _BadRecord("field 'turns' should be a non-empty list of strings")
    return BenchmarkItem("mt_bench", str(_field(record, "question_id", (int, str))), tuple(turns), None,
                         _field(record, "category", str))


def _gsm8k(record: Any, line: int) -> BenchmarkItem:
    solution = _field(record, "answer", str)
    lines = solution.strip().splitlines()
    if not lines or not lines[-1].startswith("####") or not lines[-1][4:].strip():
        raise _BadRecord("field 'answer' should end with a '#### <number>' line")
    return BenchmarkItem("gsm8k", str(line), (_field(record, "question", str),),
                         lines[-1][4:].strip().replace(",", ""))


def _math500(record: Any, line: int) -> BenchmarkItem:
    return BenchmarkItem("math500", _field(record, "unique_id", str), (_field(record, "problem", str),),
                         _field(record, "answer", str), _optional_str(record, "subject"))


def format_number(value: float) -> str:
    """A float gold as text, without a trailing `.0` when integral (SVAMP stores 51 as 51.0)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _svamp(record: Any, line: int) -> BenchmarkItem:
    body, question = _field(record, "Body", str), _field(record, "Question", str)
    return BenchmarkItem("svamp", _field(record, "ID", str), (f"{body.strip()} {question.strip()}".strip(),),
                         format_number(_field(record, "Answer", (int, float))), _optional_str(record, "Type"))


PARSERS: dict[str, Callable[[Any, int], BenchmarkItem]] = {
    "mt_bench": _mt_bench, "gsm8k": _gsm8k, "math500": _math500, "svamp": _svamp,
}


def benchmark_path(name: str, root: Path | None = None) -> Path:
    """The benchmark's file under `root` (default: the data dir), with the errors a user can act on."""
    if name not in BENCHMARK_FILES:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    relative = BENCHMARK_FILES[name]
    path = (root or data_dir()) / relative
    if not path.is_file():
        raise ValueError(f"{path} not found: set TAPS_DATA_DIR to the folder holding {relative}")
    return path


def load_benchmark(name: str, n: int | None = None, root: Path | None = None) -> list[BenchmarkItem]:
    """The first `n` items of a benchmark (all when None), in file order; bad data raises ValueError at `path:line`."""
    path = benchmark_path(name, root)
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    parse = PARSERS[name]
    records = JsonRecords(path, expect_array=path.suffix == ".json")
    items: list[BenchmarkItem] = []
    if n == 0:
        return items
    for number, record in records:
        try:
            items.append(parse(record, number))
        except _BadRecord as e:
            raise ValueError(f"{path}:{number}: {e}") from None
        if len(items) == n:
            break
    return items


def benchmark_prompts(name: str, n: int, root: Path | None = None) -> list[str]:
    """The first `n` user prompts of a benchmark (MT-Bench: first turns), for speed and acceptance runs."""
    return [item.turns[0] for item in load_benchmark(name, n, root)]
