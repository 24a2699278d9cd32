"""Feature-caching and head-training throughput of one config, fp32 vs bf16 side by side in one process.

Usage: python benchmarks/train_throughput.py --config configs/smollm2/eagle2-math.yaml --examples 48 --threads 2
Writes results/training/throughput.md. Uses a scratch TAPS_HOME so real caches are left alone.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
import typer

from taps_engine.fileio import atomic_write


def main(config: Path = typer.Option(...), examples: int = 48, epochs: int = 1, threads: int = 0,
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
    d = cfg.data
    n_math = min(d.n_math, examples) if d.kind != "chat" else 0
    n_chat = min(d.n_chat, examples) if d.kind != "math" else 0
    data, _ = build_dataset(d.kind, n_math, n_chat, d.seed, math_path=d.math_path, chat_path=d.chat_path)
    scratch = Path(tempfile.mkdtemp(prefix="taps-throughput-"))
    stage = cfg.train.stages[0].model_copy(update={"epochs": epochs})
    rows = []
    for dtype in ("fp32", "bf16"):
        os.environ["TAPS_HOME"] = str(scratch / dtype)  # separate feature caches and heads per dtype
        run = cfg.model_copy(update={
            "dtype": dtype, "data": d.model_copy(update={"n_math": n_math, "n_chat": n_chat}),
            "train": cfg.train.model_copy(update={"stages": [stage]})})
        target = load_target(run.target, dtype=dtype)
        cache_features(target, data, run.features_dir, d.max_length, progress=False)
        feature_rate = read_manifest(run.features_dir)["last_run"]["tokens_per_s"]
        log = train(run, target, progress=False)["epochs"]
        rows.append((dtype, feature_rate, log[-1]["tokens_per_s"]))
    from taps_engine.costs import machine_line

    lines = [f"Command: `python benchmarks/train_throughput.py --config {config} --examples {examples} "
             f"--epochs {epochs}" + (f" --threads {threads}" if threads else "") + "`", "", f"Machine: {machine_line()}.", "",
             f"{len(data)} examples of {cfg.name}'s data (max length {d.max_length}), torch threads "
             f"{cfg.train.threads or 'default'}, ce_fraction {cfg.train.ce_fraction}.", "",
             "| dtype | feature caching tok/s | training tok/s | training x fp32 |", "|---|---|---|---|"]
    lines += [f"| {dt} | {fr} | {tr} | {tr / rows[0][2]:.2f} |" for dt, fr, tr in rows]
    text = "\n".join(lines) + "\n"
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    print(text)

if __name__ == "__main__":
    typer.run(main)
