"""Reading records from JSON array and JSON Lines files, each with the line it starts on.

Data files are large and sometimes damaged, so records are decoded one at a time: errors name `path:line`, and
an array cut inside its last record (the packaged ShareGPT file is) can still yield every complete record before
the cut when the caller allows it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

_SPACE = re.compile(r"\s*")


class JsonRecords:
    """Iterate `(line, record)` over a JSON array (first non-blank character `[`) or a JSON Lines file.

    With `allow_truncated`, an array that ends inside a record or before its `]` stops there and sets
    `truncated`; any other syntax error is a ValueError naming the file and line.
    """

    def __init__(self, path: str | Path, allow_truncated: bool = False, expect_array: bool = False) -> None:
        self.path = Path(path)
        self.allow_truncated = allow_truncated
        self.expect_array = expect_array
        self.truncated = False

    def _error(self, line: int, what: str) -> ValueError:
        return ValueError(f"{self.path}:{line}: {what}")

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such file")
        with self.path.open("r", encoding="utf-8-sig") as f:
            head = f.read(4096).lstrip()
        if head.startswith("["):
            yield from self._array()
        elif self.expect_array:
            raise self._error(1, "expected a JSON array of records")
        else:
            yield from self._lines()

    def _lines(self) -> Iterator[tuple[int, Any]]:
        with self.path.open("r", encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise self._error(number, f"malformed JSON ({e.msg})") from None
                yield number, record

    def _array(self) -> Iterator[tuple[int, Any]]:
        text = self.path.read_text(encoding="utf-8-sig")
        decoder = json.JSONDecoder()
        pos = _SPACE.match(text, text.index("[") + 1).end()
        line, counted = 1, 0   # line numbers advance incrementally: counting from the start each time is quadratic

        def line_at(i: int) -> int:
            nonlocal line, counted
            line += text.count("\n", counted, i)
            counted = i
            return line

        if text.startswith("]", pos):
            return
        while True:
            if pos >= len(text):
                if self.allow_truncated:   # cut between two records
                    self.truncated = True
                    return
                raise self._error(line_at(len(text)), "malformed JSON (the array is not closed)")
            try:
                record, end = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as e:
                cut = e.msg.startswith("Unterminated string") or not text[e.pos:].strip()
                if cut and self.allow_truncated:   # the file ends inside this record: keep what came before
                    self.truncated = True
                    return
                raise self._error(e.lineno, f"malformed JSON ({e.msg})") from None
            yield line_at(pos), record
            pos = _SPACE.match(text, end).end()
            if text.startswith("]", pos):
                return
            if pos < len(text):
                if not text.startswith(",", pos):
                    raise self._error(line_at(pos), "malformed JSON (expected ',' or ']' between records)")
                pos = _SPACE.match(text, pos + 1).end()
