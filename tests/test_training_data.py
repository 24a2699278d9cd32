"""Training data: ShareGPT / math loaders, seeded mixing, and assistant-only loss masks for two chat templates."""

import copy
import json
from pathlib import Path

import pytest

from taps_engine.settings import data_dir
from training.data import build_dataset, load_chat, load_math, render, sharegpt_path

FIXTURES = Path(__file__).parent / "fixtures"
SHAREGPT = FIXTURES / "sharegpt_truncated.json"
MATHINSTRUCT = FIXTURES / "mathinstruct.json"
BAD_LINES = FIXTURES / "bad_lines.jsonl"


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def math_dir(tmp_path):
    """A tiny stand-in for the shared data folder: 3 GSM8K and 2 MATH training records."""
    write_jsonl(tmp_path / "gsm8k" / "train.jsonl", [
        {"question": f"GSM question {i}?", "answer": f"Half of {2 * i} is 2*{i}/2 = <<2*{i}/2={i}>>{i}.\n#### {i}"}
        for i in range(3)])
    write_jsonl(tmp_path / "math" / "train.jsonl", [
        {"problem": f"MATH problem {i}", "level": "Level 1", "type": "Algebra",
         "solution": f"So $x = \\boxed{{{i}}}$.", "unique_id": f"train/algebra/{i}.json"} for i in range(2)])
    return tmp_path


def test_truncated_sharegpt_keeps_complete_records_and_counts_skips():
    convs, report = load_chat(SHAREGPT)
    assert report.loaded == len(convs) == 4
    assert convs[0] == [{"role": "user", "content": "What is the capital of France?"},
                        {"role": "assistant", "content": "The capital of France is Paris."}]
    assert [m["role"] for m in convs[1]] == ["system", "user", "assistant", "user", "assistant"]
    assert convs[1][-1]["content"] == "11"  # chatgpt/bard are assistants; surrounding whitespace is stripped
    # the orphan leading reply, the empty turn and the unanswered last question are dropped, the rest kept
    assert convs[2] == [{"role": "user", "content": "Thanks. Summarise it in one word."},
                        {"role": "assistant", "content": "Done."}]
    assert convs[3][0]["content"] == "Is this the last complete record?"  # last complete record before the cut
    assert report.skipped == {
        "not an object": 1,
        "missing or non-list conversations": 2,
        "unknown role": 1,
        "non-string value": 1,
        "no assistant turn": 1,
        "no non-empty turns": 1,
        "roles do not alternate": 1,
        "truncated record at end of file": 1,
    }
    assert report.dropped_turns == {"leading assistant turn": 1, "trailing user turn": 1, "empty turn": 1}


def test_chat_limit_and_truncation_between_records(tmp_path):
    convs, report = load_chat(SHAREGPT, limit=2)
    assert len(convs) == report.loaded == 2
    # cut right after a complete record (no closing bracket): that record counts, the file is reported truncated
    text = SHAREGPT.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[:text.index('  {\n    "id": "truncated_12"')])
    convs, report = load_chat(cut)
    assert len(convs) == 4 and report.skipped["truncated record at end of file"] == 1
    # JSON Lines, with a byte-order mark as some editors write it
    bom = tmp_path / "chat.jsonl"
    bom.write_text("\ufeff" + BAD_LINES.read_text().splitlines()[0] + "\n", encoding="utf-8")
    assert load_chat(bom)[0] == [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]


def test_malformed_json_lines_name_file_and_line(tmp_path):
    with pytest.raises(ValueError, match=r"bad_lines\.jsonl:3: malformed JSON"):
        load_chat(BAD_LINES)
    bad_math = tmp_path / "math.jsonl"
    bad_math.write_text('{"instruction": "1+1?", "output": "2"}\n{"instruction": \n')
    with pytest.raises(ValueError, match=r"math\.jsonl:2: malformed JSON"):
        load_math(bad_math)
    # a syntax error in the middle of a JSON array is not a truncation
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"conversations": []},\n {"conversations": [}\n, {"conversations": []}\n]')
    with pytest.raises(ValueError, match=r"broken\.json:3: malformed JSON"):
        load_chat(broken)
    # a missing file raised early, not as an empty data set
    with pytest.raises(ValueError, match="no such file"):
        load_chat(tmp_path / "absent.json")


def test_mathinstruct_file():
    examples, report = load_math(MATHINSTRUCT)
    assert report.loaded == len(examples) == 3
    assert examples[0] == [
        {"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"},
        {"role": "assistant", "content": "Tom has 3 + 4 = 7 apples.\nThe answer is 7"}]
    assert report.skipped == {"missing or non-string instruction/output": 1, "empty instruction/output": 1}
    assert len(load_math(MATHINSTRUCT, limit=2)[0]) == 2


def test_offline_math_interleaves_gsm8k_and_math(math_dir, monkeypatch):
    examples, report = load_math(data_dir=math_dir)
    assert report.loaded == 5 and report.skipped == {}
    questions = [ex[0]["content"] for ex in examples]
    assert questions == ["GSM question 0?", "MATH problem 0", "GSM question 1?", "MATH problem 1", "GSM question 2?"]
    # calculator annotations removed, final '#### n' line kept
    assert examples[2][1]["content"] == "Half of 2 is 2*1/2 = 1.\n#### 1"
    assert examples[1][1]["content"] == "So $x = \\boxed{0}$."
    monkeypatch.setenv("TAPS_DATA_DIR", str(math_dir))  # the default data folder follows TAPS_DATA_DIR
    assert load_math(limit=3)[0] == examples[:3]


def test_missing_math_data_says_which_file_and_how_to_provide_it(tmp_path, math_dir):
    with pytest.raises(ValueError) as err:
        load_math(data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "gsm8k" / "train.jsonl") in msg
    assert "TAPS_DATA_DIR" in msg and "--math-path" in msg
    (math_dir / "math" / "train.jsonl").unlink()
    with pytest.raises(ValueError, match=r"math/train\.jsonl is missing"):
        load_math(data_dir=math_dir)


def test_mixed_dataset_exact_sizes_sources_and_seeding(math_dir):
    math_pool, _ = load_math(data_dir=math_dir)
    chat_pool, _ = load_chat(SHAREGPT)
    kwargs = dict(chat_path=SHAREGPT, data_dir=math_dir)
    examples, info = build_dataset("mixed", 3, 2, seed=0, **kwargs)
    assert len(examples) == 5 and info["total"] == 5
    assert sum(ex in math_pool for ex in examples) == 3 and sum(ex in chat_pool for ex in examples) == 2
    assert info["math_available"] == 5 and info["chat_available"] == 4
    assert info["chat_report"]["skipped"]["truncated record at end of file"] == 1
    assert build_dataset("mixed", 3, 2, seed=0, **kwargs)[0] == examples
    assert any(build_dataset("mixed", 3, 2, seed=s, **kwargs)[0] != examples for s in (1, 2, 3))

    math_only, info = build_dataset("math", 4, 99, seed=0, **kwargs)  # n_chat ignored, chat never loaded
    assert len(math_only) == 4 and all(ex in math_pool for ex in math_only) and "chat_available" not in info
    chat_only, _ = build_dataset("chat", 0, 4, seed=0, **kwargs)
    assert sorted(map(str, chat_only)) == sorted(map(str, chat_pool))
    with pytest.raises(ValueError, match="only 4 are available"):
        build_dataset("chat", 0, 5, seed=0, **kwargs)
    with pytest.raises(ValueError, match="unknown data set kind"):
        build_dataset("code", 1, 1, seed=0, **kwargs)


def test_answers_for_a_source_the_data_set_does_not_draw_is_a_config_error():
    """{chat: target} on a math set would silently do nothing; the config says why it is refused."""
    from training.config import DataConfig

    assert DataConfig(kind="mixed", n_math=1, n_chat=1, answers={"chat": "target"}).distilled == ["chat"]
    assert DataConfig(kind="math", n_math=1, answers="target").distilled == ["math"]
    with pytest.raises(ValueError, match="answers names chat, which a 'math' data set does not draw from"):
        DataConfig(kind="math", n_math=1, answers={"chat": "target"})


def test_a_benchmark_sample_caps_each_source_the_kind_draws_from():
    from training.config import DataConfig

    mixed = DataConfig(kind="mixed", n_math=600, n_chat=30, seed=3).capped(48)
    assert (mixed.n_math, mixed.n_chat, mixed.seed) == (48, 30, 3)
    assert (DataConfig(kind="math", n_math=600, n_chat=9).capped(48).n_chat, DataConfig(kind="chat", n_chat=5,
            n_math=9).capped(48).n_math) == (0, 0)


# --------------------------------------------------------------------------------------------- loss masks

QWEN25_TEMPLATE = """\
{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) or message.role == 'assistant' %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LLAMA3_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = '<|begin_of_text|>' + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

CONVERSATION = [
    {"role": "user", "content": "What is 2 + 2? Answer: 4"},
    {"role": "assistant", "content": "4"},  # also appears in the user turn: must be found in the reply
    {"role": "user", "content": "And written out as a word, please."},
    {"role": "assistant", "content": "Four.\nIt is spelled f-o-u-r."},
]


@pytest.fixture(scope="module")
def smol_tokenizer():
    from taps_engine import load_target

    return load_target(dtype="fp32").tokenizer


@pytest.fixture(scope="module")
def templates(smol_tokenizer):
    """name -> (tokenizer, end-of-turn marker): SmolLM2's own ChatML, a Qwen2.5-style one, a Llama-3-style one."""
    qwen = copy.deepcopy(smol_tokenizer)
    qwen.chat_template = QWEN25_TEMPLATE
    llama = copy.deepcopy(smol_tokenizer)
    llama.add_tokens(["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                     special_tokens=True)
    llama.chat_template = LLAMA3_TEMPLATE
    return {"smollm2": (smol_tokenizer, "<|im_end|>"), "qwen2.5": (qwen, "<|im_end|>"),
            "llama3": (llama, "<|eot_id|>")}


def masked_runs(tokenizer, ids, mask) -> list[str]:
    """Decoded text of each maximal run of masked tokens."""
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["smollm2", "qwen2.5", "llama3"])
@pytest.mark.parametrize("system", [None, "You are terse and exact."])
def test_loss_mask_covers_assistant_content_and_end_of_turn_only(templates, name, system):
    tokenizer, eot = templates[name]
    messages = ([{"role": "system", "content": system}] if system else []) + CONVERSATION
    ids, mask = render(tokenizer, messages, max_length=4096)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(ids) == full  # the ids are exactly the template's rendering
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    assert masked_runs(tokenizer, ids, mask) == [a + eot for a in assistants]
    unmasked = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] in unmasked
    if name == "qwen2.5" and not system:
        assert "You are Qwen" in unmasked  # the template's default system message is never trained on


@pytest.mark.real_model
def test_loss_mask_with_a_trimming_template(templates):
    tokenizer, _ = templates["llama3"]
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "  Hi there!\n"}]
    ids, mask = render(tokenizer, messages, max_length=4096)
    assert masked_runs(tokenizer, ids, mask) == ["Hi there!<|eot_id|>"]


@pytest.mark.real_model
def test_render_truncates_and_needs_a_template(templates):
    tokenizer, _ = templates["smollm2"]
    ids, mask = render(tokenizer, CONVERSATION, max_length=4096)
    short_ids, short_mask = render(tokenizer, CONVERSATION, max_length=12)
    assert len(short_ids) == len(short_mask) == 12
    assert short_ids == ids[:12] and short_mask == mask[:12]
    with pytest.raises(ValueError, match="max_length"):
        render(tokenizer, CONVERSATION, max_length=0)
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        render(bare, CONVERSATION, max_length=64)


# --------------------------------------------------------------------------------------------- real data

def test_packaged_sharegpt_loads():
    try:
        sharegpt_path()
    except ValueError as e:
        pytest.skip(str(e))
    convs, report = load_chat(limit=50)
    assert len(convs) == report.loaded == 50
    for conv in convs:
        body = conv[1:] if conv[0]["role"] == "system" else conv
        assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2)
        assert all(m["content"].strip() for m in conv)


def test_real_gsm8k_and_math_train_load():
    root = data_dir()
    files = [root / "gsm8k" / "train.jsonl", root / "math" / "train.jsonl"]
    if not all(f.is_file() for f in files):
        pytest.skip(f"no GSM8K/MATH training data under {root}")
    expected = sum(sum(1 for line in f.open(encoding="utf-8") if line.strip()) for f in files)
    examples, report = load_math()
    assert report.loaded == len(examples) == expected and report.skipped == {}
    assert examples[0][1]["content"].splitlines()[-1].startswith("#### ")
    assert "\\boxed" in examples[1][1]["content"]
    assert not any("<<" in ex[1]["content"] for ex in examples[::2][:500])


def test_plain_text_rendering_trains_the_replies_of_a_base_model(tokenizer):
    from training.data import TRUNCATED, render_plain

    messages = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "It is 4."}]
    ids, mask = render_plain(tokenizer, messages, 64)
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained.startswith("\n\nIt is 4.") or trained.strip().startswith("It is 4.")
    assert ids[-1] == tokenizer.eos_token_id and mask[-1] == 1
    assert "<|im_start|>" not in tokenizer.decode(ids), "no chat template"
    cut, cut_mask = render_plain(tokenizer, messages[:1] + [{**messages[1], TRUNCATED: True}], 64)
    assert cut == ids[:-1] and sum(cut_mask) == sum(mask) - 1
    assert render_plain(tokenizer, messages, 3)[0] == ids[:3]
