"""Final-answer extraction and scoring: real gold records parse and match themselves, model-style outputs score
as a grader would, and outputs without an answer score as wrong."""

import json
from decimal import Decimal

import pytest

from taps_engine.answers import extract_answer, is_correct, normalize
from taps_engine.eval_sets import BENCHMARK_FILES, BENCHMARKS, load_benchmark


def _records(root, name):
    return [json.loads(line) for line in (root / BENCHMARK_FILES[name]).read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------- real golds

def test_gsm8k_golds_are_numbers_and_match_their_own_solutions(real_data):
    items, records = load_benchmark("gsm8k", root=real_data), _records(real_data, "gsm8k")
    comma = 0
    for item, record in zip(items, records):
        assert Decimal(item.answer) == Decimal(normalize("gsm8k", item.answer)), item.id
        comma += "," in record["answer"].splitlines()[-1]
        # the reference solution read as a model output: `####` wins over the calculator annotations before it
        predicted = extract_answer("gsm8k", record["answer"])
        assert predicted == item.answer and is_correct("gsm8k", predicted, item.answer), (item.id, predicted)
    assert comma > 0
    i = next(i for i, r in enumerate(records) if r["answer"].endswith("#### 2,125"))
    assert items[i].answer == "2125" and extract_answer("gsm8k", records[i]["answer"]) == "2125"
    assert not is_correct("gsm8k", "2,124", items[i].answer) and is_correct("gsm8k", "2,125", items[i].answer)


def test_svamp_float_golds(real_data):
    items, records = load_benchmark("svamp", root=real_data), json.loads(
        (real_data / BENCHMARK_FILES["svamp"]).read_text(encoding="utf-8"))
    for item, record in zip(items, records):
        assert isinstance(record["Answer"], float)
        assert is_correct("svamp", repr(record["Answer"]), item.answer), item.id  # "51.0" matches "51"
        assert not is_correct("svamp", repr(record["Answer"] + 1), item.answer), item.id
    # every SVAMP gold is integral (there is no real non-integral one to test), so check the formatting rule
    non_integral = [it.id for it in items if not float(it.answer).is_integer()]
    assert non_integral == [] and all(not it.answer.endswith(".0") for it in items)
    assert is_correct("svamp", "0.5", "0.5") and is_correct("svamp", ".50", "0.5")
    assert not is_correct("svamp", "0.51", "0.5") and not is_correct("svamp", "5", "0.5")


def test_math500_boxed_solution_matches_answer(real_data):
    items, records = load_benchmark("math500", root=real_data), _records(real_data, "math500")
    failures = []
    for item, record in zip(items, records):
        boxed = extract_answer("math500", record["solution"])
        if boxed is None or normalize("math500", boxed) != normalize("math500", item.answer) \
                or not is_correct("math500", boxed, item.answer):
            failures.append((item.id, boxed, item.answer))
    assert len(failures) <= 0.02 * len(items), f"{len(failures)} mismatches: {failures}"


def test_math500_normalization_keeps_distinct_golds_apart(real_data):
    golds = sorted({it.answer for it in load_benchmark("math500", root=real_data)})
    by_norm = {}
    for gold in golds:
        by_norm.setdefault(normalize("math500", gold), set()).add(gold)
    merged = sorted(sorted(v) for v in by_norm.values() if len(v) > 1)
    # only spellings of the same value merge (units, degrees, \$, x=, thousands separators, \frac14, spacing)
    assert merged == [["10,\\!080", "10080"], ["120", "120^\\circ"], ["15", "15\\mbox{ cm}^2"],
                      ["2 \\sqrt{5}", "2\\sqrt{5}"], ["30", "30^\\circ"], ["36", "36^\\circ", "\\$36"],
                      ["5", "x=5"], ["90", "90^\\circ"], ["\\frac14", "\\frac{1}{4}"]]
    assert not is_correct("math500", golds[0], golds[1]) and not is_correct("math500", "\\frac{1}{3}", "0.333")


@pytest.mark.parametrize("unique_id, answer", [
    ("test/precalculus/807.json", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("test/algebra/2253.json", "\\frac{3\\sqrt{3}}{4}"),
    ("test/intermediate_algebra/2015.json", "\\{1\\pm\\sqrt{5},-2\\}"),
    ("test/precalculus/920.json", "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}"),
    ("test/number_theory/417.json", "11,\\! 111,\\! 111,\\! 100"),
])
def test_math500_nested_braces_on_real_records(real_data, unique_id, answer):
    record = next(r for r in _records(real_data, "math500") if r["unique_id"] == unique_id)
    assert record["answer"] == answer
    assert extract_answer("math500", record["solution"]) == answer
    assert is_correct("math500", extract_answer("math500", f"So the answer is $\\boxed{{{answer}}}$."), answer)


def test_math500_real_golds_survive_model_style_rewrites(real_data):
    for item in load_benchmark("math500", root=real_data):
        rewritten = item.answer.replace("\\frac", "\\dfrac").replace(",", ", ").replace("(", "\\left(") + "."
        assert is_correct("math500", extract_answer("math500", f"Thus $\\boxed{{{rewritten}}}$"), item.answer), \
            (item.id, rewritten)


# --------------------------------------------------------------------------------------------- model outputs

@pytest.mark.parametrize("benchmark", ["gsm8k", "svamp"])
@pytest.mark.parametrize("text, expected", [
    ("The answer is 1,234.", "1234"),
    ("Step: 5 + 3 = 8\n#### 72\nIs there anything else? 9", "72"),
    ("She spends $2 on each, so she has $18.00 left", "18.00"),
    ("The temperature drops to -7 degrees.", "-7"),
    ("The temperature drops to −7 degrees.", "-7"),
    ("That is 0.5 of the cake", "0.5"),
    ("a rise of 50%.", "50"),
    ("Total: 1{,}250 apples", "1250"),
    ("so 3 + 4 = 7 and \\boxed{12} is wrong? No: the final answer is \\boxed{\\$1,234}.", "1234"),
    ("\\boxed{x = 5}", "5"),
    ("\\boxed{5 \\text{ apples}} after 3 days", "5"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
])
def test_numeric_extraction(benchmark, text, expected):
    assert extract_answer(benchmark, text) == expected


def test_numeric_scoring():
    assert is_correct("gsm8k", extract_answer("gsm8k", "The answer is 1,234."), "1234")
    assert not is_correct("gsm8k", extract_answer("gsm8k", "The answer is 1,234."), "1235")
    assert is_correct("gsm8k", extract_answer("gsm8k", "#### 72"), "72")
    assert not is_correct("gsm8k", extract_answer("gsm8k", "#### 72"), "27")
    assert is_correct("gsm8k", extract_answer("gsm8k", "so she has $18.00 left"), "18")
    assert not is_correct("gsm8k", extract_answer("gsm8k", "so she has $18.50 left"), "18")
    assert is_correct("gsm8k", "50%", "50") and is_correct("svamp", "-3", "-3.0")
    assert is_correct("gsm8k", "72.0000001", "72") and not is_correct("gsm8k", "72.01", "72")
    assert normalize("gsm8k", "$1,234.50") == "1234.5" and normalize("svamp", "18.00") == "18"
    assert normalize("gsm8k", "3,4") == "3,4"  # a list, not a thousands-separated number
    assert not is_correct("gsm8k", "3,4", "34")


@pytest.mark.parametrize("predicted_text, gold", [
    ("\\boxed{\\frac{3}{4}}", "\\frac34"),
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
    ("so $x = 5$ and \\boxed{x = 5}", "5"),
    ("\\boxed{y = 2x + 3}", "y = 2x + 3"),
    ("The point is $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{(3,\\tfrac\\pi2)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{90^{\\circ}}", "90^\\circ"),
    ("\\boxed{32348}", "\\$32,\\!348"),
    ("\\boxed{5.4}", "5.4 \\text{ cents}"),
    ("\\boxed{864}", "864 \\mbox{ inches}^2"),
    ("\\boxed{\\frac{270}{7}}", "\\frac{270}7\\text{ degrees}"),
    ("\\boxed{C}", "\\text{(C)}"),
    ("\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),
    ("\\boxed{0.35625}", ".35625"),
    ("\\boxed{0.5}", "\\frac{1}{2}"),
    ("\\boxed{10\\%}", "10"),
    ("\\boxed{4210_{5}}", "4210_5"),
    ("\\fbox{\\sqrt2}", "\\sqrt{2}"),
    ("first \\boxed{1}, finally \\boxed{\\frac{1}{16}}", "\\frac{1}{16}"),
])
def test_math500_correct(predicted_text, gold):
    assert is_correct("math500", extract_answer("math500", predicted_text), gold)


@pytest.mark.parametrize("predicted_text, gold", [
    ("\\boxed{\\frac{3}{4}}", "\\frac43"),
    ("\\boxed{\\frac{1}{3}}", "0.333"),
    ("\\boxed{(3,4)}", "(3,4]"),
    ("\\boxed{1,-2}", "-2,1"),
    ("\\boxed{2x+3}", "5x - 7y + 11z + 4 = 0"),
    ("\\boxed{\\frac{1}{16}}, then \\boxed{1}", "\\frac{1}{16}"),
    ("\\boxed{f \\circ g}", "fg"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 12 \\end{pmatrix}"),
])
def test_math500_wrong(predicted_text, gold):
    assert extract_answer("math500", predicted_text) is not None
    assert not is_correct("math500", extract_answer("math500", predicted_text), gold)


def test_math500_box_extraction_edge_cases():
    assert extract_answer("math500", "\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert extract_answer("math500", "\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}") == \
        "\\left( 3, \\frac{\\pi}{2} \\right)"
    # escaped braces are literal, not grouping: a one-sided \{ (piecewise style) must not unbalance the box
    assert extract_answer("math500", "\\boxed{\\left\\{ x \\right.} done") == "\\left\\{ x \\right."
    assert extract_answer("math500", "\\boxed{\\{1\\pm\\sqrt{5},-2\\}}") == "\\{1\\pm\\sqrt{5},-2\\}"
    assert extract_answer("math500", "The answer is \\boxed 7.") == "7."
    assert extract_answer("math500", "so \\boxed{1} and then \\boxed{\\frac{1}{2}") is None  # truncated last box
    assert extract_answer("math500", "The answer is 1/2.") is None  # no box
    assert extract_answer("math500", "\\boxed{}") is None


def test_no_answer_is_wrong_not_an_error():
    for benchmark, gold in (("gsm8k", "18"), ("svamp", "3"), ("math500", "\\frac{1}{2}")):
        assert extract_answer(benchmark, "I am not sure how to solve this.") is None
        assert is_correct(benchmark, None, gold) is False
        assert is_correct(benchmark, extract_answer(benchmark, "No idea."), gold) is False


def test_mt_bench_and_unknown_benchmarks():
    assert extract_answer("mt_bench", "The answer is \\boxed{3}. #### 3") is None
    with pytest.raises(ValueError, match="judge"):
        is_correct("mt_bench", "3", "3")
    with pytest.raises(ValueError, match="judge"):
        normalize("mt_bench", "3")
    for fn, args in ((extract_answer, ("3",)), (normalize, ("3",)), (is_correct, ("3", "3"))):
        with pytest.raises(ValueError) as e:
            fn("aime", *args)
        assert all(name in str(e.value) for name in BENCHMARKS)
