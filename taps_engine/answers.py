"""Final-answer extraction and scoring for the math benchmarks, so evaluation runs can report accuracy.

GSM8K and SVAMP answers are numbers, compared numerically. MATH-500 answers are LaTeX, compared after a
normaliser in the spirit of the Hendrycks MATH / PRM800K one (own implementation), or numerically when both
sides are plain numbers or integer fractions. MT-Bench has no gold answers (it is judged), so scoring it is an error.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .eval_sets import BENCHMARKS

NUMERIC = ("gsm8k", "svamp")
NUMERIC_REL_TOL = 1e-9  # golds are integers or short decimals: absorb float round-off, never an off-by-one
NUMERIC_ABS_TOL = 1e-6

# A number as written in prose: optional sign, thousands groups ("1,234") or plain digits, optional decimals.
# Not preceded by a letter, digit or '.', so "x2", "3.5.1" tails and "step10" are not read as numbers.
_NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?|(?<![\w.])[-−]?\.\d+")
_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def _check(benchmark: str) -> None:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")


def _read_group(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at `text[start] == '{'` and the index after it; None if unbalanced.

    Escaped braces (`\\{`, `\\}`) are literal set braces, not grouping, so `\\boxed{\\{1,2\\}}` reads whole.
    """
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces kept), or None.

    Also reads the brace-less `\\boxed 5` form. A truncated last box (unbalanced braces) gives None rather than
    an earlier box, because an earlier box is often an intermediate result.
    """
    matches = list(_BOX.finditer(text))
    if not matches:
        return None
    i = matches[-1].end()
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] == "{":
        group = _read_group(text, i)
        return group[0] if group else None
    token = re.match(r"[^\s$]+", text[i:])
    return token.group(0) if token and i > matches[-1].end() else None


def _clean_number(token: str) -> str:
    return token.replace("−", "-").replace(",", "")


def _numbers(text: str) -> list[str]:
    text = text.replace("{,}", ",").replace(",\\!", ",")  # LaTeX thousands separators: 1{,}234, 1,\!234
    return [_clean_number(m.group(0)) for m in _NUMBER.finditer(text)]


def _number_in_box(content: str) -> str | None:
    """A number from boxed content such as `18`, `\\$1,234`, `x = 5`, `5 \\text{ apples}` or `\\frac{3}{4}`."""
    content = content.split("=")[-1]
    content = re.sub(r"\\(?:text|mbox|textrm|mathrm)\{[^{}]*\}", " ", content)
    frac = re.fullmatch(r"\s*(-?)\s*\\[dt]?frac\{(\d+)\}\{(\d+)\}\s*", content)
    if frac and int(frac.group(3)):
        value = Fraction(int(frac.group(2)), int(frac.group(3))) * (-1 if frac.group(1) else 1)
        return str(value.numerator) if value.denominator == 1 else repr(value.numerator / value.denominator)
    found = _numbers(content)
    return found[0] if found else None


def extract_answer(benchmark: str, text: str) -> str | None:
    """The final answer in a model output, or None when it gives none (scored as wrong, not as an error).

    GSM8K/SVAMP: the number after the last `####`, else the number in the last `\\boxed{}`, else the last number
    in the text, returned with thousands separators removed (e.g. "1234", "18.00", "-3"). MATH-500: the raw
    LaTeX of the last `\\boxed{}`/`\\fbox{}`. MT-Bench: always None (no gold answer to match).
    """
    _check(benchmark)
    if benchmark == "mt_bench":
        return None
    if benchmark == "math500":
        boxed = last_boxed(text)
        return boxed.strip() if boxed is not None and boxed.strip() else None
    for line in reversed(text.split("####")[1:]):  # the last `####` marker followed by a number on its line
        found = _numbers(line.split("\n")[0])
        if found:
            return found[0]
    boxed = last_boxed(text)
    if boxed is not None:
        number = _number_in_box(boxed)
        if number is not None:
            return number
    found = _numbers(text)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------- numeric sets

def _parse_decimal(answer: str) -> Decimal | None:
    """A plain number after dropping currency, percent, spacing and thousands separators; None if it is not one."""
    s = answer.strip().replace("−", "-")
    for junk in ("{,}", "\\!", "\\,", " ", "\\$", "$", "\\%", "%"):
        s = s.replace(junk, "," if junk == "{,}" else "")
    s = s.rstrip(".")
    if "," in s:
        if not re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
            return None  # "3,4" is a list, not a number
        s = s.replace(",", "")
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", s):
        return None
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def _format_decimal(value: Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


# --------------------------------------------------------------------------------------------- MATH-500

# A trailing unit in words: "5.4 \\text{ cents}", "864 \\mbox{ inches}^2", "\\frac{270}7\\text{ degrees}".
_UNIT_WRAPPER = re.compile(r"(?<=\S)\s*\\(?:text|textrm|textbf|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}(\^\{?\d\}?)?\s*$")
_WHOLE_TEXT = re.compile(r"\\(?:text|textrm|textbf|mbox|mathrm)\{([^{}]*)\}")


def _read_argument(s: str, i: int) -> tuple[str, int] | None:
    """One TeX macro argument at `s[i]`: a brace group (returned without braces), a control word, or one char."""
    if i >= len(s):
        return None
    if s[i] == "{":
        group = _read_group(s, i)
        return group if group else None
    if s[i] == "\\":
        word = re.match(r"\\[a-zA-Z]+|\\.", s[i:])
        return word.group(0), i + len(word.group(0))
    return s[i], i + 1


def _brace_arguments(s: str, macro: str, count: int) -> str:
    """Rewrite `\\frac12` / `\\frac1{b}` / `\\sqrt2` as `\\frac{1}{2}` / `\\frac{1}{b}` / `\\sqrt{2}`."""
    out, i = [], 0
    pattern = re.compile(re.escape(macro) + r"(?![a-zA-Z])")
    while True:
        m = pattern.search(s, i)
        if not m:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:m.end()])
        j, args = m.end(), []
        if macro == "\\sqrt" and j < len(s) and s[j] == "[":  # \sqrt[3]{x}: keep the index as written
            close = s.find("]", j)
            if close < 0:
                out.append(s[j:])
                return "".join(out)
            out.append(s[j:close + 1])
            j = close + 1
        for _ in range(count):
            arg = _read_argument(s, j)
            if arg is None:
                break
            args.append(arg[0])
            j = arg[1]
        if len(args) < count:
            out.append(s[m.end():])
            return "".join(out)
        out.append("".join("{" + _brace_arguments(a, macro, count) + "}" for a in args))
        i = j


def _normalize_math(answer: str) -> str:
    s = answer.strip().rstrip(".").rstrip()
    whole = _WHOLE_TEXT.fullmatch(s)
    if whole:  # the answer is a word or a choice: \text{Evelyn}, \text{(C)}
        s = whole.group(1).strip()
    s = s.replace("\n", "").replace("\\displaystyle", "")
    # spacing commands \! \, \; \: "\ " and ~; a "\\" row break is matched first so it survives
    s = re.sub(r"\\\\|\\[!,;: ]|~", lambda m: m.group(0) if m.group(0) == "\\\\" else "", s)
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for degree in ("^{\\circ}", "^\\circ", "\\degree", "°"):
        s = s.replace(degree, "")
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = _UNIT_WRAPPER.sub("", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = _WHOLE_TEXT.sub(lambda m: m.group(1), s)  # remaining \text{...} inside an expression: keep the words
    s = _brace_arguments(s, "\\frac", 2)
    s = _brace_arguments(s, "\\sqrt", 1)
    s = re.sub(r"([_^])\{(\w)\}", r"\1\2", s)  # 4210_{5} -> 4210_5, x^{2} -> x^2
    assignment = re.fullmatch(r"(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\w)?=([^=<>]+)", s)
    if assignment:  # x=5 -> 5, y=2x+3 -> 2x+3, \theta=... -> ...
        s = assignment.group(1)
    choice = re.fullmatch(r"\(([A-Ea-e])\)", s)
    if choice:  # (C) -> C
        s = choice.group(1).upper()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # 10,080 -> 10080 (a whole-number answer, not a list)
        s = s.replace(",", "")
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)  # .35 -> 0.35
    return s


def _math_number(normalized: str) -> Fraction | None:
    """Exact value of a plain decimal or integer fraction (`\\frac{a}{b}`, `a/b`), else None."""
    sign, s = 1, normalized
    if s.startswith("-"):
        sign, s = -1, s[1:]
    try:
        if re.fullmatch(r"\d+(\.\d+)?", s):
            return sign * Fraction(s)
        m = re.fullmatch(r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}|(\d+)/(\d+)", s)
        if m:
            num, den = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
            return sign * Fraction(num) / Fraction(den)
    except ZeroDivisionError:
        return None
    return None


# --------------------------------------------------------------------------------------------- public

def normalize(benchmark: str, answer: str) -> str:
    """Canonical form of an answer, so that equal answers written differently compare equal.

    GSM8K/SVAMP: the number without separators, currency, percent or trailing zeros ("1,234.50" -> "1234.5",
    "$18.00" -> "18"), or the stripped text when it is not a number. MATH-500: LaTeX with spacing, `\\left`/
    `\\right`, degrees, `$`, `\\%`, unit `\\text{}`, `dfrac`, brace-less `\\frac12`, `x=` prefixes removed.
    """
    _check(benchmark)
    if benchmark == "mt_bench":
        raise ValueError("mt_bench has no gold answers to normalize (it is scored by a judge)")
    if benchmark == "math500":
        return _normalize_math(answer)
    value = _parse_decimal(answer)
    return _format_decimal(value) if value is not None else answer.strip()


def is_correct(benchmark: str, predicted: str | None, gold: str) -> bool:
    """Whether a predicted final answer matches the gold one; a missing prediction (None) is wrong.

    GSM8K/SVAMP compare numerically with a small tolerance (SVAMP golds are floats). MATH-500 compares normalized
    strings, then exact values when both sides are plain numbers or integer fractions (`\\frac{1}{2}` = `0.5`).
    """
    _check(benchmark)
    if benchmark == "mt_bench":
        raise ValueError("mt_bench has no gold answers: it is scored by a judge, not by answer matching")
    if predicted is None:
        return False
    if benchmark in NUMERIC:
        p, g = _parse_decimal(predicted), _parse_decimal(gold)
        if p is None or g is None:
            return normalize(benchmark, predicted) == normalize(benchmark, gold)
        return math.isclose(float(p), float(g), rel_tol=NUMERIC_REL_TOL, abs_tol=NUMERIC_ABS_TOL)
    p_norm, g_norm = _normalize_math(predicted), _normalize_math(gold)
    if p_norm == g_norm:
        return True
    p_value, g_value = _math_number(p_norm), _math_number(g_norm)
    return p_value is not None and g_value is not None and p_value == g_value
