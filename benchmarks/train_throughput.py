"""Feature-caching and head-training throughput of one config, side by side in one process: fp32 vs bf16, or
(--losses) the config's vocabulary losses vs the draft-vocabulary losses on every position (ce_vocab: draft,
ce_fraction 1.0), or (--packing) an fp32 target on oneDNN-packed linear layers vs PyTorch's default products
(taps_engine/packing.py); the last two alternate A B A B so that a machine's drift hits both alike.

Usage: python benchmarks/train_throughput.py --config configs/smollm2/eagle2-math.yaml --examples 48 --threads 2
Writes results/training/throughput.md. Uses a scratch TAPS_HOME so real caches are left alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import typer

from taps_engine.fileio import write_report


def main(config: Path = typer.Option(...), examples: int = 48, epochs: int = 1, threads: int = 0,
         losses: bool = typer.Option(False, help="Compare vocabulary losses instead of dtypes."),
         packing: bool = typer.Option(False, help="Compare fp32 on packed linear layers with fp32 without."),
         out: Path = Path("results/training/throughput.md")) -> None:
    from taps_engine import load_target
    from training.config import load_config
    from training.data import build_dataset
    from training.features import cache_features, read_manifest
    from training.trainer import train

    cfg = load_config(config)
    if threads:
        cfg.train.threads = threads
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)  # features and training alike, as `taps train` runs them
    d = cfg.data.capped(examples)
    data, _ = build_dataset(d.kind, d.n_math, d.n_chat, d.seed, math_path=d.math_path, chat_path=d.chat_path)
    scratch = Path(tempfile.mkdtemp(prefix="taps-throughput-"))
    stage = cfg.train.stages[0].model_copy(update={"epochs": epochs})
    base = cfg.train.model_copy(update={"stages": [stage]})
    draft = base.model_copy(update={"ce_vocab": "draft", "ce_fraction": 1.0, "draft_vocab": base.draft_vocab or 8192})
    if losses and packing:
        raise typer.BadParameter("--losses and --packing are two different comparisons; pick one")
    if losses:
        variants = [(f"{base.ce_vocab} vocabulary, ce_fraction {base.ce_fraction}", "auto", base, True),
                    ("draft vocabulary, every position", "auto", draft, True)] * 2
    elif packing:
        variants = [("fp32, packed linear layers", "fp32", base, True), ("fp32, MKL products", "fp32", base, False)] * 2
    else:
        variants = [("fp32", "fp32", base, True), ("bf16", "bf16", base, True)]
    rates: dict[str, list[tuple[float, float]]] = {}
    for index, (label, dtype, train_config, pack) in enumerate(variants):
        # a feature cache per dtype, shared by the loss variants; each packing run computes its own
        os.environ["TAPS_HOME"] = str(scratch / (f"{dtype}-{index}" if packing else dtype))
        run = cfg.model_copy(update={
            "dtype": dtype, "data": d, "train": train_config,
            "output_dir": scratch / f"head-{index}"})
        target = load_target(run.target, dtype=dtype, pack=pack)
        cache_features(target, data, run.features_dir, d.max_length, progress=False)
        feature_rate = read_manifest(run.features_dir)["last_run"]["tokens_per_s"]
        log = train(run, target, progress=False)["epochs"]
        rates.setdefault(label, []).append((feature_rate, log[-1]["tokens_per_s"]))
    from taps_engine.costs import machine_line

    first = sum(r[1] for r in next(iter(rates.values()))) / len(next(iter(rates.values())))
    lines = [f"Command: `python benchmarks/train_throughput.py --config {config} --examples {examples} "
             f"--epochs {epochs}" + (f" --threads {threads}" if threads else "") + (" --losses" if losses else "")
             + (" --packing" if packing else "") + "`", "", f"Machine: {machine_line()}.", "",
             f"{len(data)} examples of {cfg.name}'s data (max length {d.max_length}), torch threads "
             f"{cfg.train.threads or 'default'}, ce_fraction {cfg.train.ce_fraction}"
             + (", each variant run twice from scratch, alternating (tok/s: the mean, then each run)."
                if losses or packing else "."), "",
             f"| {'losses' if losses else 'target' if packing else 'dtype'} | feature caching tok/s | training tok/s "
             "| training x first |", "|---|---|---|---|"]
    for label, runs in rates.items():
        mean = sum(r[1] for r in runs) / len(runs)
        each = f" ({', '.join(f'{r[1]:.0f}' for r in runs)})" if len(runs) > 1 else ""
        features = (f"{sum(r[0] for r in runs) / len(runs):.0f} ({', '.join(f'{r[0]:.0f}' for r in runs)})"
                    if packing else f"{runs[0][0]}")
        lines.append(f"| {label} | {features} | {mean:.1f}{each} | {mean / first:.2f} |")
    write_report(out, lines)

if __name__ == "__main__":
    typer.run(main)
