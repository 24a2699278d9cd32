"""Evaluation benchmarks: the four real data files load with the right counts, ids, turns and golds; bad data
gives a `path:line` ValueError instead of a stack trace."""

import json
from decimal import Decimal

import pytest

from taps_engine.eval_sets import (
    BENCHMARK_FILES,
    BENCHMARKS,
    BenchmarkItem,
    benchmark_prompts,
    format_number,
    load_benchmark,
)


def test_paper_column_order():
    assert BENCHMARKS == ("mt_bench", "gsm8k", "math500", "svamp")
    assert set(BENCHMARK_FILES) == set(BENCHMARKS)


# --------------------------------------------------------------------------------------------- real files

def test_mt_bench(real_data):
    items = load_benchmark("mt_bench", root=real_data)
    assert len(items) == 80
    assert all(len(it.turns) == 2 and all(t.strip() for t in it.turns) for it in items)
    assert all(it.answer is None and it.benchmark == "mt_bench" for it in items)
    assert [it.id for it in items] == [str(q) for q in range(81, 161)]
    first = items[0]
    assert first.category == "writing"
    assert first.turns[0].startswith("Compose an engaging travel blog post about a recent trip to Hawaii")
    assert first.turns[1] == "Rewrite your previous response. Start every sentence with the letter A."
    assert {it.category for it in items} == {"writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                             "stem", "humanities"}


def test_gsm8k(real_data):
    items = load_benchmark("gsm8k", root=real_data)
    assert len(items) == 1319
    assert [it.id for it in items[:3]] == ["1", "2", "3"] and items[-1].id == "1319"
    first = items[0]
    assert first.turns == (first.turns[0],) and first.turns[0].startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answer == "18" and first.category is None
    for it in items:  # every gold is a plain integer string (the README: all GSM8K finals are integers)
        assert "," not in it.answer and Decimal(it.answer) == int(Decimal(it.answer)), it


def test_gsm8k_gold_with_thousands_separator(real_data):
    path = real_data / BENCHMARK_FILES["gsm8k"]
    raw = [json.loads(line)["answer"].splitlines()[-1] for line in path.read_text(encoding="utf-8").splitlines()]
    with_comma = [i for i, last in enumerate(raw) if "," in last]
    assert with_comma, "expected real GSM8K test golds written with thousands separators"
    items = load_benchmark("gsm8k", root=real_data)
    for i in with_comma:
        assert items[i].answer == raw[i].removeprefix("####").strip().replace(",", "")
    assert raw[146] == "#### 2,125" and items[146].answer == "2125" and items[146].id == "147"


def test_math500(real_data):
    items = load_benchmark("math500", root=real_data)
    assert len(items) == 500 and len({it.id for it in items}) == 500
    first = items[0]
    assert first.id == "test/precalculus/807.json" and first.category == "Precalculus"
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.turns[0].startswith("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.")
    assert all(len(it.turns) == 1 and it.answer for it in items)


def test_svamp(real_data):
    items = load_benchmark("svamp", root=real_data)
    assert len(items) == 1000
    assert [it.id for it in items[:2]] == ["chal-1", "chal-2"] and items[-1].id == "chal-1000"
    first = items[0]
    expected = ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
                "How much do you have to pay to buy each pack?")
    assert first.turns == (expected,)
    assert first.answer == "51" and first.category == "Subtraction"
    raw = json.loads((real_data / BENCHMARK_FILES["svamp"]).read_text(encoding="utf-8"))
    for it, record in zip(items, raw):
        assert it.turns[0] == f"{record['Body'].strip()} {record['Question'].strip()}"
        assert "  " not in it.turns[0]
        assert float(it.answer) == record["Answer"] and not it.answer.endswith(".0"), (it.id, it.answer)


def test_n_limits_and_prompts(real_data):
    for name in BENCHMARKS:
        full = load_benchmark(name, root=real_data)
        assert load_benchmark(name, 3, root=real_data) == full[:3]
        assert load_benchmark(name, 0, root=real_data) == []
        assert load_benchmark(name, 10_000, root=real_data) == full
        assert benchmark_prompts(name, 2, root=real_data) == [full[0].turns[0], full[1].turns[0]]
    with pytest.raises(ValueError, match="n must be >= 0"):
        load_benchmark("gsm8k", -1, root=real_data)


# --------------------------------------------------------------------------------------------- errors

def test_unknown_benchmark_lists_choices(tmp_path):
    with pytest.raises(ValueError) as e:
        load_benchmark("humaneval", root=tmp_path)
    assert "'humaneval'" in str(e.value) and all(name in str(e.value) for name in BENCHMARKS)


def test_missing_file_names_taps_data_dir(tmp_path):
    for name in BENCHMARKS:
        with pytest.raises(ValueError) as e:
            load_benchmark(name, root=tmp_path / "nowhere")
        assert "TAPS_DATA_DIR" in str(e.value) and BENCHMARK_FILES[name] in str(e.value)


def test_default_root_follows_taps_data_dir(data_dir):
    # conftest's data_dir points TAPS_DATA_DIR at a scratch folder holding training files only
    with pytest.raises(ValueError, match="TAPS_DATA_DIR"):
        benchmark_prompts("gsm8k", 2)
    (data_dir / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": "Q?", "answer": "1 + 1\n#### 2"}) + "\n")
    assert load_benchmark("gsm8k") == [BenchmarkItem("gsm8k", "1", ("Q?",), "2")]


def _write(tmp_path, name, text):
    path = tmp_path / BENCHMARK_FILES[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _error(name, root):
    with pytest.raises(ValueError) as e:
        load_benchmark(name, root=root)
    assert type(e.value) is ValueError and e.value.__cause__ is None  # one message, no chained traceback
    return str(e.value)


GOOD_GSM = json.dumps({"question": "Q1?", "answer": "work\n#### 1,000"})


@pytest.mark.parametrize("bad_line, line, expected", [
    (json.dumps({"question": "Q2?"}), 3, "missing field 'answer'"),
    (json.dumps({"answer": "#### 3"}), 3, "missing field 'question'"),
    (json.dumps({"question": "Q2?", "answer": "no final line"}), 3, "'#### <number>'"),
    (json.dumps({"question": ["Q2?"], "answer": "#### 3"}), 3, "field 'question' should be str"),
    ('{"question": "Q2?", "answer": ', 3, "malformed JSON"),
    (json.dumps(["Q2?", "#### 3"]), 3, "expected a JSON object"),
])
def test_malformed_gsm8k_line(tmp_path, bad_line, line, expected):
    path = _write(tmp_path, "gsm8k", f"{GOOD_GSM}\n\n{bad_line}\n{GOOD_GSM}\n")  # blank line 2 is skipped
    msg = _error("gsm8k", tmp_path)
    assert f"{path}:{line}:" in msg and expected in msg
    assert load_benchmark("gsm8k", 1, root=tmp_path)[0].answer == "1000"  # records before the bad line still load


def test_malformed_mt_bench_and_math500(tmp_path):
    path = _write(tmp_path, "mt_bench", json.dumps({"question_id": 1, "category": "x", "turns": "one turn"}) + "\n")
    msg = _error("mt_bench", tmp_path)
    assert f"{path}:1:" in msg and "'turns'" in msg
    path = _write(tmp_path, "math500", json.dumps({"problem": "p", "solution": "s", "unique_id": "u"}) + "\n")
    msg = _error("math500", tmp_path)
    assert f"{path}:1:" in msg and "missing field 'answer'" in msg


def test_svamp_array_errors_point_at_the_record_line(tmp_path):
    good = {"ID": "a", "Body": " Body one. ", "Question": "How many? ", "Answer": 0.5}
    path = _write(tmp_path, "svamp", json.dumps([good, {"ID": "b", "Body": "x", "Question": "y"}], indent=4))
    msg = _error("svamp", tmp_path)
    assert f"{path}:8:" in msg and "missing field 'Answer'" in msg  # the second record opens on line 8
    _write(tmp_path, "svamp", json.dumps([good, {**good, "Answer": "3"}], indent=4))
    assert "field 'Answer' should be int or float" in _error("svamp", tmp_path)
    _write(tmp_path, "svamp", '[\n{"ID": "a",\n "Body": ')
    assert f"{path}:3:" in _error("svamp", tmp_path)
    _write(tmp_path, "svamp", '{"ID": "a"}')
    assert "expected a JSON array" in _error("svamp", tmp_path)
    _write(tmp_path, "svamp", json.dumps([good]))
    assert load_benchmark("svamp", root=tmp_path) == [BenchmarkItem("svamp", "a", ("Body one. How many?",), "0.5")]


def test_format_number():
    assert [format_number(x) for x in (51.0, 0.5, -3.0, 22090603.0, 7, 2.25)] == ["51", "0.5", "-3", "22090603",
                                                                                    "7", "2.25"]
