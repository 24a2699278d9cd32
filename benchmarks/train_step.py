"""Head training's optimizer steps on the same batches of a config's data by several loops, taking turns batch by
batch in a rotating order so that a machine's drift hits all alike.

`--compare loops`: one forward per sequence (what `taps train` runs), one forward per batch padded to its longest
sequence, and one per group of similar length (no group more than 20% padding). All compute the same loss (each
sequence's own, weighted by length; tests/test_training_e2e.py).
`--compare soft-targets`: one forward per sequence with the vocabulary losses' soft targets recomputed at every step
(`ce_targets_topk: 0`) and cached once as the target's K most likely tokens (`--soft-k`); the one-off cost of
caching them is reported beside.

Usage: python benchmarks/train_step.py --config configs/smollm2/eagle2-mixed-one-sitting.yaml --batches 24
       [--compare soft-targets --soft-k 64 --out results/training/train-step-soft-targets.md]
Writes results/training/train-step.md. Caches the examples' features in a scratch TAPS_HOME.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import torch
import typer

from taps_engine.fileio import write_report


def length_groups(batch: list, max_padding: float = 0.2) -> list[list]:
    """A batch's sequences in groups of similar length, one forward each, no group more than `max_padding`
    padding: padding a short sequence to a long one's length can cost more than the forward it saves."""
    order = sorted(batch, key=lambda ex: -ex.input_ids.shape[0])
    groups = [[order[0]]]
    for ex in order[1:]:
        group = groups[-1]
        real = sum(e.input_ids.shape[0] for e in group) + ex.input_ids.shape[0]
        if real >= (1 - max_padding) * group[0].input_ids.shape[0] * (len(group) + 1):
            group.append(ex)
        else:
            groups.append([ex])
    return groups


def main(config: Path = typer.Option(...), batches: int = 24, threads: int = 2,
         compare: str = typer.Option("loops", help="loops | soft-targets"), soft_k: int = 64,
         out: Path = Path("results/training/train-step.md")) -> None:
    from taps_engine import load_target
    from taps_engine.costs import machine_line
    from taps_engine.evaluation.intervals import ratio_interval
    from taps_engine.head import DraftHead
    from training.config import load_config
    from training.data import build_dataset
    from training.features import assistant_token_counts, cache_features, frequent_tokens, load_examples
    from training.trainer import _batches, batch_losses, loss_vocabulary, with_soft_targets

    if compare not in ("loops", "soft-targets"):
        raise typer.BadParameter("--compare must be loops or soft-targets")
    torch.set_num_threads(threads)
    cfg = load_config(config)
    tc = cfg.train
    os.environ["TAPS_HOME"] = tempfile.mkdtemp(prefix="taps-train-step-")
    d = cfg.data.capped(batches * tc.batch_tokens // 200)  # per source: `batches` batches of sequences ~200 long
    data, _ = build_dataset(d.kind, d.n_math, d.n_chat, d.seed, math_path=d.math_path, chat_path=d.chat_path)
    run = cfg.model_copy(update={"data": d})
    target = load_target(cfg.target, dtype=cfg.dtype)
    cache_features(target, data, run.features_dir, d.max_length, progress=False)
    examples = list(load_examples(run.features_dir))
    plan = _batches(examples, tc.batch_tokens, random.Random(tc.seed))[:batches]
    torch.manual_seed(tc.seed)
    head = DraftHead.for_target(target.model).float().train()
    if tc.draft_vocab:
        head.set_draft_vocab(frequent_tokens(assistant_token_counts(run.features_dir, target.config.vocab_size),
                                             tc.draft_vocab))
    embed = target.model.get_input_embeddings()
    lm_head = loss_vocabulary(target.model.get_output_embeddings(),
                              head.draft_vocab if tc.ce_vocab == "draft" else None)
    passes = tc.hass_passes if cfg.method == "hass" else 1
    generator = torch.Generator().manual_seed(tc.seed)
    use_bf16 = target.dtype == torch.bfloat16

    def step(groups: list[list]) -> None:
        """Gradients of one batch from one forward per group of sequences (the whole batch, or each alone)."""
        head.zero_grad(set_to_none=True)
        total = sum(ex.input_ids.shape[0] for group in groups for ex in group)
        for group in groups:
            with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                terms = batch_losses(head, embed, lm_head, group, tc, passes, tc.stages[0].topk_weight, generator)
            (terms.total * sum(ex.input_ids.shape[0] for ex in group) / total).backward()

    loops = {"one forward per sequence": lambda batch: step([[ex] for ex in batch])}
    caching = ""
    if compare == "loops":
        loops["one forward per batch, padded to its longest"] = lambda batch: step([batch])
        loops["one forward per group of similar length"] = lambda batch: step(length_groups(batch))
    else:
        used = [ex for batch in plan for ex in batch]
        start = time.perf_counter()
        cached = dict(zip(map(id, used), with_soft_targets(used, lm_head, soft_k, use_bf16)))
        seconds = time.perf_counter() - start
        positions = sum(int(ex.loss_mask[1:].sum()) for ex in used)
        caching = (f" Caching the top-{soft_k} soft targets of their {positions:,} loss positions took {seconds:.1f} s "
                   "once.")
        loops[f"one forward per sequence, cached top-{soft_k} soft targets"] = \
            lambda batch: step([[cached[id(ex)]] for ex in batch])
    for loop in loops.values():  # warm-up
        loop(plan[0])
    seconds: dict[str, list[float]] = {name: [] for name in loops}
    for k, batch in enumerate(plan):
        turn = k % len(loops)
        for name in list(loops)[turn:] + list(loops)[:turn]:
            start = time.perf_counter()
            loops[name](batch)
            seconds[name].append(time.perf_counter() - start)
    tokens = sum(ex.input_ids.shape[0] for batch in plan for ex in batch)
    base = seconds["one forward per sequence"]
    options = f" --compare {compare} --soft-k {soft_k} --out {out}" if compare != "loops" else ""
    lines = [f"Command: `python benchmarks/train_step.py --config {config} --batches {batches} --threads {threads}"
             f"{options}`",
             "", f"Machine: {machine_line()}; target {cfg.target} in {target.model.dtype}.", "",
             f"{len(plan)} optimizer batches of {cfg.name}'s data (with the data set's replies; max length "
             f"{d.max_length}, {tokens:,} tokens, {sum(map(len, plan)) / len(plan):.1f} sequences per batch, "
             f"{sum(len(length_groups(b)) for b in plan) / len(plan):.1f} length groups; {cfg.method}, ce_vocab "
             f"{tc.ce_vocab}, ce_fraction {tc.ce_fraction}), forward and backward of each batch by every loop, taking "
             "turns. The ratio is the per-sequence loop's time over the loop's (95% interval over batches)."
             + caching, "",
             "| loop | training tok/s | x per sequence |", "|---|---|---|"]
    for name, times in seconds.items():
        low, high = ratio_interval(base, times)
        lines.append(f"| {name} | {tokens / sum(times):.0f} | {sum(base) / sum(times):.2f} ({low:.2f}-{high:.2f}) |")
    write_report(out, lines)


if __name__ == "__main__":
    typer.run(main)
