"""How much of feature caching's forwards is padding, by how many shards' examples are grouped by length together
(`training.features.SHARDS_PER_PASS`), and what that saves in time.

Padded tokens are counted over the recipe's whole data set (a count, the same on any machine); the time is taken
on its first `--examples` examples, forwarded one shard at a time (as before round 16) and all together (as
`taps features` groups `SHARDS_PER_PASS` shards now), alternating A B, B A so that a machine's drift hits both.
Shards here hold 128 usable examples (`taps features` cuts shards before leaving out the unusable ones, so its
shards hold a few less and pad a little more).

Usage: python benchmarks/feature_padding.py --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml
       --examples 512 --threads 2
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import typer

from taps_engine.fileio import write_report
from training.features import SHARD_SIZE


def padded_tokens(lengths: list[int], shards_per_pass: int, budget: int) -> int:
    """Tokens the forwards compute, padding included, when each pass groups `shards_per_pass` shards' examples."""
    from taps_engine.padding import budget_groups

    total, span = 0, SHARD_SIZE * shards_per_pass
    for start in range(0, len(lengths), span):
        part = lengths[start:start + span]
        total += sum(max(part[i] for i in group) * len(group) for group in budget_groups(part, budget))
    return total


def main(config: Path = typer.Option(...), examples: int = 512, threads: int = 2, repeats: int = 2,
         out: Path = Path("results/training/feature-padding.md")) -> None:
    from taps_engine import load_target
    from taps_engine.costs import machine_line
    from taps_engine.padding import PADDED_TOKENS
    from training.config import load_config
    from training.data import RENDERERS, build_dataset
    from training.features import SHARDS_PER_PASS, is_usable, target_features

    if examples < 2 * SHARD_SIZE:
        raise typer.BadParameter(f"--examples must be at least {2 * SHARD_SIZE} (two shards), got {examples}")
    torch.set_num_threads(threads)
    cfg = load_config(config)
    d = cfg.data
    data, _ = build_dataset(d.kind, d.n_math, d.n_chat, d.seed, math_path=d.math_path, chat_path=d.chat_path)
    target = load_target(cfg.target, dtype=cfg.dtype)
    render = RENDERERS[d.text]
    sequences = [ids for ids, mask in (render(target.tokenizer, m, d.max_length) for m in data)
                 if is_usable(ids, mask)]
    lengths = [len(s) for s in sequences]
    real = sum(lengths)
    lines = [f"Command: `python benchmarks/feature_padding.py --config {config} --examples {examples} "
             f"--threads {threads}`", "", f"Machine: {machine_line()}; target {cfg.target} in {target.model.dtype}.",
             "", f"Padding in feature caching's forwards over all {len(sequences)} usable examples of {cfg.name} "
             f"({real:,} tokens; at most {PADDED_TOKENS} padded tokens per forward, shards of {SHARD_SIZE}; the "
             "distilled examples of a recipe that self-distils are forwarded too here):", "",
             "| shards grouped per pass | tokens computed | padding |", "|---|---|---|"]
    for k in (1, 2, 4, 8, 16):
        total = padded_tokens(lengths, k, PADDED_TOKENS)
        lines.append(f"| {k}{' (now)' if k == SHARDS_PER_PASS else ''} | {total:,} | {total / real - 1:.2%} |")

    subset = sequences[:examples]

    def per_shard() -> list[torch.Tensor]:
        return [f for s in range(0, len(subset), SHARD_SIZE)
                for f in target_features(target, subset[s:s + SHARD_SIZE], PADDED_TOKENS)]

    def together() -> list[torch.Tensor]:
        return target_features(target, subset, PADDED_TOKENS)

    loops = {"one shard per pass": per_shard, f"{len(subset) // SHARD_SIZE} shards per pass": together}
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    results = {}
    for r in range(repeats):
        for name in list(loops)[::1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            results[name] = loops[name]()
            seconds[name].append(time.perf_counter() - start)
            print(name, seconds[name][-1], flush=True)
    first, second = (results[name] for name in loops)
    worst = max(float((a.float() - b.float()).abs().max()) for a, b in zip(first, second))
    tokens = sum(map(len, subset))
    lines += ["", f"Timed on the first {len(subset)} examples ({tokens:,} tokens), {repeats} runs each:", "",
              "| grouping | padding | seconds per run | tok/s |", "|---|---|---|---|"]
    for (name, runs), k in zip(seconds.items(), (1, len(subset) // SHARD_SIZE)):
        best = min(runs)
        padding = padded_tokens(lengths[:len(subset)], k, PADDED_TOKENS) / tokens - 1
        lines.append(f"| {name} | {padding:.2%} | {', '.join(f'{s:.1f}' for s in runs)} | {tokens / best:,.0f} |")
    a, b = (sum(runs) for runs in seconds.values())
    lines += ["", f"Time ratio (one shard per pass / grouped), all runs: {a / b:.3f}. Largest difference between the "
              f"two groupings' features: {worst:.2e} (the same sequences in differently padded forwards)."]
    write_report(out, lines)


if __name__ == "__main__":
    typer.run(main)
