"""How often each policy's T=0 output differs from plain greedy decoding, per compute dtype.

Usage: python benchmarks/numerics_divergence.py --prompts 8 --max-new-tokens 64 --out results/serving/numerics.md

For each dtype (bf16 = `--numerics fast` on a CPU with native bf16 or a GPU; fp32 = `--numerics exact`), plain
greedy decoding and every policy run on the same prompts with the shipped drafters; a prompt diverges when a
policy's tokens differ from plain decoding's in the same dtype, and the first differing position is reported.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import typer

from taps_engine import Decoder, PlainDecoder, load_head, load_target
from taps_engine.target import DEFAULT_TARGET
from taps_engine.costs import machine_line
from taps_engine.drafter_specs import default_drafters
from taps_engine.fileio import write_report
from taps_engine.speed import bench_prompts
from taps_engine.tree import default_tree

POLICIES = (("single", "math"), ("single", "chat"), ("confidence", None), ("merged-trie", None), ("sticky", None))


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def main(prompts: int = 8, max_new_tokens: int = 64, threads: int = 2, out: Path = typer.Option(...)) -> None:
    torch.set_num_threads(threads)
    items = bench_prompts(prompts)
    lines = [f"Command: `python benchmarks/numerics_divergence.py --prompts {prompts} --max-new-tokens "
             f"{max_new_tokens} --threads {threads} --out {out}`", "", f"Machine: {machine_line()}.", "",
             f"{len(items)} prompts ({prompts} GSM8K + {prompts} MT-Bench), greedy, {max_new_tokens} new tokens, "
             "shipped drafters, the CPU tree; a prompt diverges when the policy's tokens differ from plain greedy "
             "decoding in the same dtype.", "",
             "| dtype | policy | diverged prompts | first differing token (median of diverged) |", "|---|---|---|---|"]
    for dtype in ("bf16", "fp32"):
        target = load_target(dtype=dtype)
        heads = {name: load_head(path, target.model) for name, path in default_drafters(DEFAULT_TARGET).items()}
        tree = default_tree(target.device)
        plain = PlainDecoder(target)
        reference = [plain.generate([{"role": "user", "content": p}], max_new_tokens=max_new_tokens).token_ids
                     for _, p in items]
        for policy, drafter in POLICIES:
            decoder = Decoder(target, heads, policy, tree)
            firsts = []
            for (_, prompt), expected in zip(items, reference):
                got = decoder.generate([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens,
                                       drafter=drafter).token_ids
                first = first_difference(got, expected)
                if first is not None:
                    firsts.append(first)
            name = f"{policy} ({drafter})" if drafter else policy
            median = f"{statistics.median(firsts):.0f}" if firsts else "-"
            lines.append(f"| {dtype} | {name} | {len(firsts)}/{len(items)} | {median} |")
            print(lines[-1], flush=True)
    write_report(out, lines)


if __name__ == "__main__":
    typer.run(main)
