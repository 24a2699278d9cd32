"""Markdown report of trained drafters: training logs and measured acceptance lengths.

Usage: python benchmarks/training_report.py --records A.json [--records B.json ...] --drafter DIR [--drafter DIR ...]
           --out results/training/README.md [--notes notes.md] [--merged results/training/records.json]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from taps_engine.fileio import write_text, write_json


def main(records: list[Path] = typer.Option(...), drafter: list[Path] = typer.Option(...),
         out: Path = typer.Option(...), notes: Optional[Path] = typer.Option(None),
         merged: Optional[Path] = typer.Option(None, help="Also write all records as one JSON list here.")) -> None:
    rows = [row for path in records for row in json.loads(path.read_text())]
    if merged is not None:
        write_json(merged, rows)
    lines = ["# Trained drafters for SmolLM2-135M-Instruct", ""]
    if notes is not None:
        lines += [notes.read_text().strip(), ""]
    lines += ["## Training", "", "| drafter | method | data | epochs | tokens/epoch (train split) | train tok/s | "
              "minutes | held-out top-1 (last epoch) |", "|---|---|---|---|---|---|---|---|"]
    for directory in drafter:
        log = json.loads((directory / "train_log.json").read_text())
        cfg, epochs = log["config"], log["epochs"]
        minutes = sum(e["seconds"] for e in epochs) / 60
        rate = sum(e["tokens"] for e in epochs) / sum(e["seconds"] for e in epochs)
        top1 = epochs[-1]["heldout_top1"]
        lines.append(f"| {cfg['name']} | {cfg['method']} | {cfg['data']['kind']} | {len(epochs)} | "
                     f"{epochs[-1]['tokens']} | {rate:.0f} | {minutes:.1f} | {top1:.3f} |")
    lines += ["", "## Acceptance length (T=0, policy single)", ""]
    trees = sorted({json.dumps(r["tree"], sort_keys=True) for r in rows})
    for tree in trees:
        t = json.loads(tree)
        lines += [f"Tree total_tokens {t['total_tokens']}, depth {t['depth']}, top_k {t['top_k']}:", "",
                  "| drafter | method | benchmark | tau | tau (per-sample) | prompts | new tokens | tokens/s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            if json.dumps(r["tree"], sort_keys=True) == tree:
                lines.append(f"| {r['drafter']} | {r['method']} | {r['benchmark']} | {r['tau']:.3f} | "
                             f"{r['tau_macro']:.3f} | {r['n_prompts']} | {r['new_tokens']} | {r['tokens_per_s']} |")
        lines.append("")
    text = "\n".join(lines)
    write_text(out, text)
    print(text)


if __name__ == "__main__":
    typer.run(main)
