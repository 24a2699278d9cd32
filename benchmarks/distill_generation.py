"""Self-distillation's generation, the target's greedy replies to a batch of training prompts, by a baseline loop
and by the engine's batched plain loop keeping the features it reads (`greedy_batch_features`, what it uses now;
before round 15 this measured `greedy_batch`), on the same batches and budgets as `distill` forms them, the two
loops taking turns (A B, then B A) so that a machine's drift hits both alike.

Baselines: `generate`, transformers' left-padded `generate` (the loop self-distillation used before round 11,
results/training/distill-generation.md); `prefill-one`, `greedy_batch` prefilling one prompt per forward (as it
did before round 13, results/training/distill-prefill.md); `no-features`, `greedy_batch` (as before round 15:
what keeping the features costs the generation, results/training/distill-kept-features.md).

Usage: python benchmarks/distill_generation.py --config configs/smollm2/eagle2-mixed-one-sitting.yaml --batches 6
       [--baseline prefill-one --out results/training/distill-prefill.md]
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
import typer

from taps_engine.fileio import write_report

NEW = "greedy_batch_features"   # the loop `distill` runs


@torch.inference_mode()
def generate_replies(target, prompts: list[list[int]], budget: int) -> list[list[int]]:
    """transformers' batched greedy `generate`, left-padded; each row cut after its first end-of-turn token."""
    fmt = target.format
    pad = fmt.tokenizer.pad_token_id if fmt.tokenizer.pad_token_id is not None else fmt.eos_token_ids[0]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=target.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=target.device)
    out = target.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, do_sample=False,
                                pad_token_id=pad, eos_token_id=list(fmt.eos_token_ids))[:, width:].tolist()
    ends = [next((i + 1 for i, t in enumerate(row) if t in fmt.eos_token_ids), len(row)) for row in out]
    return [row[:end] for row, end in zip(out, ends)]


def main(config: Path = typer.Option(...), batches: int = 6, batch_size: int = 64, threads: int = 0,
         baseline: str = typer.Option("generate", help="generate | prefill-one | no-features"),
         out: Path = Path("results/training/distill-generation.md")) -> None:
    from taps_engine import load_target
    from taps_engine.costs import machine_line
    from taps_engine.evaluation.intervals import ratio_interval
    from taps_engine.greedy import greedy_batch, greedy_batch_features
    from training.config import load_config
    from training.data import draw_sources
    from training.distill import answer_batches, prompt_of, prompt_tokens

    cfg = load_config(config)
    if threads:
        cfg.train.threads = threads
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    d = cfg.data
    target = load_target(cfg.target, dtype=cfg.dtype)
    drawn, _ = draw_sources(d.kind, d.n_math, d.n_chat, random.Random(d.seed), math_path=d.math_path,
                            chat_path=d.chat_path)
    sources = d.distilled or list(drawn)
    tokens = [prompt_tokens(target, prompt_of(m), d.text) for source in sources for m in drawn[source]]
    plan = answer_batches(tokens, d.max_length, d.answer_tokens, batch_size)
    picked = [plan[round(k * (len(plan) - 1) / max(1, batches - 1))] for k in range(min(batches, len(plan)))]
    baselines = {"generate": generate_replies,
                 "prefill-one": lambda t, p, n: greedy_batch(t, p, n, t.format.eos_token_ids, prefill_tokens=1),
                 "no-features": lambda t, p, n: greedy_batch(t, p, n, t.format.eos_token_ids)}
    if baseline not in baselines:
        raise typer.BadParameter(f"--baseline must be one of {sorted(baselines)}")
    loops = {baseline: baselines[baseline],
             NEW: lambda t, p, n: greedy_batch_features(t, p, n, t.format.eos_token_ids)[0]}
    rows = []
    for k, (batch, budget) in enumerate(picked):
        prompts, result = [tokens[i] for i in batch], {}
        for name in list(loops)[::1 if k % 2 == 0 else -1]:
            start = time.perf_counter()
            replies = loops[name](target, prompts, budget)
            result[name] = (replies, time.perf_counter() - start)
        (old, old_s), (new, new_s) = result[baseline], result[NEW]
        rows.append({"prompts": len(batch), "prompt_tokens": sum(map(len, prompts)), "budget": budget,
                     "old_tokens": sum(map(len, old)), "old_s": old_s, "new_tokens": sum(map(len, new)),
                     "new_s": new_s, "same": sum(a == b for a, b in zip(old, new))})
        print(rows[-1], flush=True)
    old_rate = sum(r["old_tokens"] for r in rows) / sum(r["old_s"] for r in rows)
    new_rate = sum(r["new_tokens"] for r in rows) / sum(r["new_s"] for r in rows)
    interval = ratio_interval([r["old_s"] for r in rows], [r["new_s"] for r in rows])
    lines = [f"Command: `python benchmarks/distill_generation.py --config {config} --batches {batches}"
             + (f" --batch-size {batch_size}" if batch_size != 64 else "") + (f" --threads {threads}" if threads else "")
             + (f" --baseline {baseline} --out {out}" if baseline != "generate" else "") + "`", "",
             f"Machine: {machine_line()}; target {cfg.target} in {target.model.dtype}.", "",
             f"{len(rows)} of the {len(plan)} generation batches of {cfg.name}'s self-distillation ({batch_size} "
             "prompts each, sorted by prompt length; batches spread evenly over that order), each answered by both "
             "loops. New tokens count each reply up to and including its end-of-turn token.", "",
             f"| batch | prompts | prompt tokens | budget | {baseline}: new tokens, s, tok/s | {NEW}: new "
             "tokens, s, tok/s | time ratio | identical replies |", "|---|---|---|---|---|---|---|---|"]
    for k, r in enumerate(rows):
        lines.append(f"| {k + 1} | {r['prompts']} | {r['prompt_tokens']} | {r['budget']} | {r['old_tokens']}, "
                     f"{r['old_s']:.1f}, {r['old_tokens'] / r['old_s']:.0f} | {r['new_tokens']}, {r['new_s']:.1f}, "
                     f"{r['new_tokens'] / r['new_s']:.0f} | {r['old_s'] / r['new_s']:.2f} | {r['same']}/{r['prompts']} |")
    ratio = sum(r["old_s"] for r in rows) / sum(r["new_s"] for r in rows)
    ci = f" (95% bootstrap interval over batches {interval[0]:.2f}-{interval[1]:.2f})" if interval else ""
    lines += ["", f"All batches: {baseline} {old_rate:.0f} new tok/s, {NEW} {new_rate:.0f} new tok/s; "
              f"{baseline}'s time / {NEW}'s {ratio:.2f}{ci}; identical replies "
              f"{sum(r['same'] for r in rows)}/{sum(r['prompts'] for r in rows)}."]
    write_report(out, lines)


if __name__ == "__main__":
    typer.run(main)
