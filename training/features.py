"""Feature cache: one target forward per example stores what a draft head trains on.

Per example: token ids, the assistant-only loss mask and the target's final hidden states after the final norm
(so the target's logits are `lm_head(feature)`). Shards of `shard_size` examples are written as safetensors
through a temp file, so an interrupted run resumes at the first missing shard and never leaves a corrupt one. The
forwards group the examples of several shards by length (`SHARDS_PER_PASS`), so little of them is padding.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_file, save_file

from taps_engine.fileio import atomic_write, write_json
from taps_engine.padding import PADDED_TOKENS, budget_groups
from taps_engine.target import Target

from .causal_attention import chunked_causal
from .data import RENDERERS, Messages, conversation_key

MANIFEST = "manifest.json"
SHARD_SIZE = 128  # examples per shard file: the unit written, and resumed after an interruption
SHARDS_PER_PASS = 8  # shards whose examples are grouped by length together: the chat specialist's forwards pad
                     # 0.97% of their tokens, against 3.66% one shard at a time (results/training/feature-padding.md)


@dataclass
class Example:
    """One cached sequence: ids (T,), loss mask (T,), features (T, H); for training with cached soft targets, the
    target's most likely tokens at each loss position (probabilities and indices into the loss vocabulary,
    (positions, K) each: `training.trainer.with_soft_targets`)."""

    input_ids: torch.Tensor
    loss_mask: torch.Tensor
    features: torch.Tensor
    soft_targets: tuple[torch.Tensor, torch.Tensor] | None = None


def dataset_fingerprint(target_name: str, examples: list[Messages], max_length: int, text: str = "chat") -> str:
    digest = hashlib.sha256(f"{target_name}|{max_length}|".encode() + (b"" if text == "chat" else f"{text}|".encode()))
    for messages in examples:
        digest.update(conversation_key(messages).encode())
    return digest.hexdigest()[:16]


def _shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:05d}.safetensors"


def target_features(target: Target, sequences: list[list[int]], batch_tokens: int) -> list[torch.Tensor]:
    """`final_hidden_states`, with attention as `causal_chunked_attention` on a CPU in bf16, where it ran at 1.09x
    sdpa's speed (results/training/feature-forward.md); in fp32 sdpa's kernel was faster (0.91x,
    feature-forward-epyc-avx2.md), and GPUs have flash kernels."""
    if target.device.type != "cpu" or target.model.dtype != torch.bfloat16:
        return final_hidden_states(target, sequences, batch_tokens)
    with chunked_causal(target.model):
        return final_hidden_states(target, sequences, batch_tokens)


@torch.inference_mode()
def final_hidden_states(target: Target, sequences: list[list[int]], batch_tokens: int) -> list[torch.Tensor]:
    """Final hidden states of each sequence, several per forward; sequences of similar length share a forward to
    waste little on padding. Right-padded, so in causal attention no real token reads a padded one and no padding
    mask is needed: without one, the attention can skip the blocks above the diagonal (sdpa with a mask computed
    them: 0.96x, results/training/feature-forward.md)."""
    out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
    for group in budget_groups([len(s) for s in sequences], batch_tokens):
        width = len(sequences[group[-1]])
        ids = torch.zeros(len(group), width, dtype=torch.long)
        for row, i in enumerate(group):
            ids[row, :len(sequences[i])] = torch.tensor(sequences[i])
        hidden = target.model.get_decoder()(input_ids=ids.to(target.device)).last_hidden_state
        for row, i in enumerate(group):
            out[i] = hidden[row, :len(sequences[i])]
    return out


def cache_features(target: Target, examples: list[Messages], directory: Path, max_length: int,
                   shard_size: int = SHARD_SIZE, store_dtype: torch.dtype = torch.bfloat16, progress: bool = True,
                   batch_tokens: int = PADDED_TOKENS, text: str = "chat",
                   known: Mapping[str, tuple[list[int], torch.Tensor]] | None = None) -> Path:
    """Write (or complete) the feature shards for `examples` under `directory`; returns the directory. `text`:
    how a conversation becomes tokens (`chat`: the chat template; `plain`: running text, for base models).
    `known`: token ids and features the target already computed, by `conversation_key` (self-distillation's
    forwards): an example they cover is stored from them (`already_read`) instead of a forward."""
    render = RENDERERS[text]
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = dataset_fingerprint(target.name, examples, max_length, text)
    manifest_path = directory / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("fingerprint") != fingerprint:
            raise ValueError(f"{directory} holds features of another data set or target "
                             f"({manifest.get('fingerprint')} != {fingerprint}); choose another directory or delete it")
    n_shards = (len(examples) + shard_size - 1) // shard_size
    todo = [i for i in range(n_shards) if not _shard_path(directory, i).exists()]
    if not todo and is_complete(directory):
        return directory  # complete: its manifest keeps the run that wrote it
    manifest = {"fingerprint": fingerprint, "target": target.name, "max_length": max_length,
                "n_examples": len(examples), "shard_size": shard_size, "n_shards": n_shards,
                "hidden_size": target.config.hidden_size, "complete": False}
    write_json(manifest_path, manifest)
    tokens, reused, skipped, start = 0, 0, 0, time.perf_counter()
    columns = [TextColumn("features"), BarColumn(), TextColumn("{task.completed}/{task.total} examples"),
               TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress) as bar:
        parts = {index: examples[index * shard_size:(index + 1) * shard_size] for index in todo}
        task = bar.add_task("features", total=sum(map(len, parts.values())), rate="-")
        for window in (todo[k:k + SHARDS_PER_PASS] for k in range(0, len(todo), SHARDS_PER_PASS)):
            kept = {index: _rendered(parts[index], target.tokenizer, render, max_length, known or {})
                    for index in window}
            skipped += sum(len(parts[index]) - len(kept[index]) for index in window)
            computed = iter(target_features(target, [i for index in window for i, _, r in kept[index] if r is None],
                                            batch_tokens))
            for index in window:
                feats = [(next(computed) if r is None else r).to("cpu", store_dtype) for _, _, r in kept[index]]
                tokens += sum(len(i) for i, _, r in kept[index] if r is None)
                reused += sum(len(i) for i, _, r in kept[index] if r is not None)
                shard = _shard(kept[index], feats, target.config.hidden_size)
                atomic_write(_shard_path(directory, index), lambda tmp, shard=shard: save_file(shard, tmp))
                bar.update(task, advance=len(parts[index]), rate=f"{tokens / (time.perf_counter() - start):.0f}")
    seconds = time.perf_counter() - start
    manifest.update(complete=True, last_run={"tokens": tokens, "seconds": round(seconds, 2), "skipped": skipped,
                                             "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
                                             **({"tokens_read_in_distillation": reused} if reused else {})})
    write_json(manifest_path, manifest)
    return directory


def is_usable(input_ids: list[int], loss_mask: list[int]) -> bool:
    """Whether a rendered example can train a head: it needs a loss position and at least 3 tokens."""
    return sum(loss_mask) > 0 and len(input_ids) >= 3


def _rendered(examples: list[Messages], tokenizer, render, max_length: int,
              known: Mapping[str, tuple[list[int], torch.Tensor]]
              ) -> list[tuple[list[int], list[int], torch.Tensor | None]]:
    """Each usable example's token ids, loss mask and the features already read for it (None: it needs a
    forward); the others are left out."""
    kept = []
    for messages in examples:
        input_ids, loss_mask = render(tokenizer, messages, max_length)
        if not is_usable(input_ids, loss_mask):
            continue
        read = already_read(input_ids, loss_mask, known.get(conversation_key(messages)))
        n = len(input_ids) if read is None else read.shape[0]
        kept.append((input_ids[:n], loss_mask[:n], read))
    return kept


def _shard(kept: list[tuple[list[int], list[int], torch.Tensor | None]], features: list[torch.Tensor],
           hidden_size: int) -> dict[str, torch.Tensor]:
    """One shard's tensors: its examples' ids, loss masks and features, concatenated, with their lengths."""
    return {"input_ids": torch.cat([torch.tensor(i, dtype=torch.int32) for i, _, _ in kept] or
                                   [torch.zeros(0, dtype=torch.int32)]),
            "loss_mask": torch.cat([torch.tensor(m, dtype=torch.uint8) for _, m, _ in kept] or
                                   [torch.zeros(0, dtype=torch.uint8)]),
            "features": torch.cat(features) if features else torch.zeros(0, hidden_size),
            "lengths": torch.tensor([len(i) for i, _, _ in kept], dtype=torch.int64)}


def already_read(input_ids: list[int], loss_mask: list[int],
                 read: tuple[list[int], torch.Tensor] | None) -> torch.Tensor | None:
    """The features a rendered example can take from what the target read (`read`: ids, features), or None. They
    serve when the example's tokens begin with the ones read and no loss position lies beyond them: what follows
    (the template's line break after the reply's end-of-turn token) is never a training target, so the example
    is stored up to there. A reply whose text tokenizes differently once re-rendered gets a forward of its own."""
    if read is None:
        return None
    read_ids, features = read
    n = min(len(input_ids), len(read_ids))
    if input_ids[:n] != read_ids[:n] or any(loss_mask[n:]):
        return None
    return features[:n]


def is_complete(directory: Path) -> bool:
    path = directory / MANIFEST
    return path.exists() and bool(json.loads(path.read_text()).get("complete"))


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.exists():
        raise ValueError(f"no feature cache in {directory}; run `taps features --config ...` first")
    manifest = json.loads(path.read_text())
    if not manifest.get("complete"):
        raise ValueError(f"feature cache {directory} is incomplete; rerun `taps features` to resume it")
    return manifest


def load_examples(directory: Path) -> Iterator[Example]:
    """Every cached example, shard by shard."""
    manifest = read_manifest(directory)
    for index in range(manifest["n_shards"]):
        shard = load_file(str(_shard_path(directory, index)))
        offsets = [0] + shard["lengths"].cumsum(0).tolist()
        for a, b in zip(offsets, offsets[1:]):
            yield Example(shard["input_ids"][a:b].long(), shard["loss_mask"][a:b].bool(), shard["features"][a:b])


def assistant_token_counts(directory: Path, vocab_size: int) -> torch.Tensor:
    """How often each token id occurs among the cached examples' assistant (loss) tokens."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    manifest = read_manifest(directory)
    for index in range(manifest["n_shards"]):
        shard = load_file(str(_shard_path(directory, index)))
        ids = shard["input_ids"].long()[shard["loss_mask"].bool()]
        counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


def frequent_tokens(counts: torch.Tensor, n: int) -> torch.Tensor:
    """The `n` most frequent token ids (ties: the lower id first), most frequent first."""
    if not 0 < n <= counts.numel():
        raise ValueError(f"draft vocabulary size must lie in [1, {counts.numel()}], got {n}")
    order = torch.sort(-counts, stable=True).indices
    return order[:n]
