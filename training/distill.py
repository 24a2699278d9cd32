"""Self-distillation: the target's own greedy answers to the training prompts replace the data set's answers.

A drafter meets the target's text at inference, not GPT-4's (ShareGPT) or a human's (GSM8K), so training on
what the target writes is training on the distribution it will be asked to predict. Each example keeps its
prompt (system message and first user turn) and gets the target's greedy reply. Answers are generated in
batches by the engine's batched plain loop (`greedy_batch`: nothing padded, a reply that ends leaves the forwards),
prompts sorted by length so a batch's replies get similar budgets; the batches are fixed by the prompts alone, so
the same data set and target give the same answers, and an interrupted run resumes at the first batch it did not
finish. Replies cut off by the token budget are marked `truncated`, so the end-of-turn
token that the chat template appends to them is not trained as a prediction.

The generation's forwards compute the target's final hidden states along every prompt and reply, which is what
feature caching would compute again for the same tokens; each batch keeps them (one safetensors file beside the
answers), and `distill` hands them to feature caching by conversation (`cache_features`'s `known`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterator, Mapping

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file

from taps_engine.fileio import atomic_write
from taps_engine.greedy import greedy_batch_features
from taps_engine.target import Target

from .data import TRUNCATED, LoadReport, Messages, conversation_key, render_plain


def prompt_of(messages: Messages) -> Messages:
    """The part of a conversation the target is asked to answer: a leading system message and the first user turn."""
    system = messages[:1] if messages[0]["role"] == "system" else []
    first_user = next(m for m in messages if m["role"] == "user")
    return system + [first_user]


def _fingerprint(target: Target, prompts: list[Messages], max_length: int, answer_tokens: int, batch: int,
                 text: str) -> str:
    mode = "" if text == "chat" else f"{text}|"   # chat keeps the fingerprints of caches made before plain text
    digest = hashlib.sha256(f"{target.name}|{target.model.dtype}|{max_length}|{answer_tokens}|{batch}|{mode}".encode())
    for prompt in prompts:
        digest.update(json.dumps(prompt, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _read_done(partial: Path) -> dict[int, dict]:
    """Finished batches of an interrupted run; a line cut off by the interruption is ignored."""
    done: dict[int, dict] = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            done[record.pop("batch")] = record
    return done


def _read_final(final: Path) -> dict[int, dict]:
    """A complete cache's batches; caches written before batches kept their time hold the answers alone."""
    return {int(k): v if isinstance(v, dict) else {"answers": v}
            for k, v in json.loads(final.read_text())["batches"].items()}


def generation_time(done: dict[int, dict]) -> dict | None:
    """What the generation cost, summed over its batches (over every run of a resumed one): the figure a
    recipe's time budget needs. None for caches written before batches kept their time."""
    if not done or any("seconds" not in b for b in done.values()):
        return None
    seconds = sum(b["seconds"] for b in done.values())
    tokens = sum(b["new_tokens"] for b in done.values())
    return {"prompts": sum(len(b["answers"]) for b in done.values()), "new_tokens": tokens,
            "seconds": round(seconds, 2), "new_tokens_per_s": round(tokens / seconds, 1) if seconds else None}


def _generate(target: Target, prompts: list[list[int]], max_new_tokens: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Greedy replies to a batch of tokenized prompts (text and whether the budget cut it off), with the batch's
    new tokens and seconds; and what the target read (each prompt and reply's token ids and features, concatenated,
    with their lengths)."""
    start = time.perf_counter()
    fmt = target.format
    tokens, features = greedy_batch_features(target, prompts, max_new_tokens, fmt.eos_token_ids)
    answers = []
    for row in tokens:
        end = next((i for i, t in enumerate(row) if t in fmt.eos_token_ids), None)
        answers.append({"text": fmt.decode(row[:end]).strip(), TRUNCATED: end is None})
    read = {"input_ids": torch.tensor([t for p, row in zip(prompts, tokens) for t in p + row], dtype=torch.int32),
            "features": torch.cat(features).to("cpu"),
            "lengths": torch.tensor([f.shape[0] for f in features], dtype=torch.int64)}
    return {"answers": answers, "new_tokens": sum(map(len, tokens)),
            "seconds": round(time.perf_counter() - start, 3)}, read


def _read_path(read_dir: Path, batch: int) -> Path:
    return read_dir / f"batch-{batch:05d}.safetensors"


def _read_features(path: Path) -> list[tuple[list[int], torch.Tensor]]:
    """A batch's token ids and features per prompt, as `_generate` wrote them."""
    shard = load_file(str(path))
    ids, features = shard["input_ids"].tolist(), shard["features"]
    offsets = [0] + shard["lengths"].cumsum(0).tolist()
    return [(ids[a:b], features[a:b]) for a, b in zip(offsets, offsets[1:])]


class KeptReads(Mapping[str, tuple[list[int], torch.Tensor]]):
    """What the target read while answering (token ids and features), by conversation key. A batch's file is
    loaded when one of its conversations is first asked for: a run whose feature cache is already complete reads
    none (the default chat recipe's files hold some 300 MB)."""

    def __init__(self, where: dict[str, tuple[Path, int]]) -> None:
        self._where = where
        self._loaded: dict[Path, list[tuple[list[int], torch.Tensor]]] = {}

    def __getitem__(self, key: str) -> tuple[list[int], torch.Tensor]:
        path, row = self._where[key]
        if path not in self._loaded:
            self._loaded[path] = _read_features(path)
        return self._loaded[path][row]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def prompt_tokens(target: Target, prompt: Messages, text: str) -> list[int]:
    """The prompt as the target will be asked it: through the chat template, or as running text ending in the
    blank line that `render_plain` puts before a reply."""
    if text == "chat":
        return target.format.encode(prompt)
    ids, _ = render_plain(target.tokenizer, prompt, 1 << 30)
    return ids + target.tokenizer("\n\n", add_special_tokens=False)["input_ids"]


def answer_batches(tokens: list[list[int]], max_length: int, answer_tokens: int,
                   batch_size: int) -> list[tuple[list[int], int]]:
    """The generation batches of tokenized prompts: each batch's prompt indices and its reply budget. A prompt
    that leaves under 16 tokens for a reply within `max_length` is left out; the rest are sorted by length, so
    the replies of a batch get similar budgets."""
    usable = [i for i, t in enumerate(tokens) if len(t) <= max_length - 16]
    order = sorted(usable, key=lambda i: (len(tokens[i]), i))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [(batch, min(answer_tokens, max_length - min(len(tokens[i]) for i in batch))) for batch in batches]


def distill(target: Target, examples: list[Messages], max_length: int, answer_tokens: int, cache_dir: Path,
            batch_size: int = 64, progress: bool = True,
            text: str = "chat") -> tuple[list[Messages], LoadReport, dict | None, KeptReads]:
    """`examples` with their replies replaced by the target's greedy answers (at most `answer_tokens` each), the
    load report, the generation's time (`generation_time`, marked `reused` when an earlier run made the answers:
    a chain of recipes on the same prompts pays for them once), and what the target read while answering (token ids
    and features of prompt and reply, by `conversation_key` of the returned conversation, read from disk when asked
    for; none for answers cached before batches kept them).

    Prompts that leave fewer than 16 tokens for a reply within `max_length`, and prompts answered with nothing,
    are counted in the report and left out. The answers are cached in `cache_dir` (one file per data set, target,
    dtype and budget), written through a temp file once complete; each batch's features in a file of its own,
    written before the batch counts as done.
    """
    prompts = [prompt_of(m) for m in examples]
    tokens = [prompt_tokens(target, p, text) for p in prompts]
    batches = answer_batches(tokens, max_length, answer_tokens, batch_size)
    usable = sorted(i for batch, _ in batches for i in batch)
    report = LoadReport()
    report.skip("prompt leaves under 16 tokens for a reply", len(prompts) - len(usable))

    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"{_fingerprint(target, prompts, max_length, answer_tokens, batch_size, text)}.jsonl"
    partial = final.with_suffix(".partial")
    read_dir = final.with_suffix(".features")
    read_dir.mkdir(exist_ok=True)
    reused = final.exists()
    done = _read_final(final) if reused else _read_done(partial)
    columns = [TextColumn("self-distillation"), BarColumn(), TextColumn("{task.completed}/{task.total} prompts"),
               TimeElapsedColumn()]
    with Progress(*columns, disable=not progress or len(done) == len(batches)) as bar:
        task = bar.add_task("distill", total=len(usable), completed=sum(len(batches[b][0]) for b in done))
        with partial.open("a") as sink:
            for b, (batch, budget) in enumerate(batches):
                if b in done:
                    continue
                done[b], read = _generate(target, [tokens[i] for i in batch], budget)
                atomic_write(_read_path(read_dir, b), lambda tmp, read=read: save_file(read, tmp))
                sink.write(json.dumps({"batch": b, **done[b]}) + "\n")
                sink.flush()
                bar.advance(task, len(batch))
    if not final.exists():
        atomic_write(final, lambda tmp: Path(tmp).write_text(json.dumps({"batches": done})))
    partial.unlink(missing_ok=True)

    answers = {i: a for b, (batch, _) in enumerate(batches) for i, a in zip(batch, done[b]["answers"])}
    reads = {i: (_read_path(read_dir, b), row) for b, (batch, _) in enumerate(batches)
             if _read_path(read_dir, b).exists() for row, i in enumerate(batch)}
    out: list[Messages] = []
    known: dict[str, tuple[Path, int]] = {}
    for i in usable:
        if not answers[i]["text"]:
            report.skip("empty reply")
            continue
        reply = {"role": "assistant", "content": answers[i]["text"]}
        if answers[i][TRUNCATED]:
            reply[TRUNCATED] = True
        out.append(prompts[i] + [reply])
        if i in reads:
            known[conversation_key(out[-1])] = reads[i]
    report.loaded = len(out)
    timing = generation_time(done)
    return out, report, {**timing, "reused": True} if timing and reused else timing, KeptReads(known)
