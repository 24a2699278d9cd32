"""How far apart drafters are in weight space, and how far each moved from its start.

Usage: python benchmarks/weight_distances.py --config configs/eval/averaging.yaml --seed 0 --seed 1
           --extra mixed=taps_engine/drafters/smollm2-135m-instruct/eagle2-mixed
           --out results/smollm2-study/averaging/weight_distances.md

The averaging study asks why averaged parents collapse in the paper and not here. Whether two parents can be
interpolated depends on whether they lie near one start, so besides the distance between the parents this
writes the distance of every drafter to every other and to the random initializations the trainer draws for
the given seeds (`torch.manual_seed(seed)` then a fresh head, as `training/trainer.py` does): a drafter trained
from seed k lies closer to `init-seed<k>` than to the others. Distance: ||a - b|| / mean(||a||, ||b||) over the
trained weights (`taps_engine.head.weight_distance`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import typer

from taps_engine.evaluation.config import load_eval_config
from taps_engine.fileio import atomic_write, write_text
from taps_engine.head import DraftHead, load_head, weight_distance
from taps_engine.target import load_target


def random_init(model: torch.nn.Module, seed: int) -> DraftHead:
    torch.manual_seed(seed)
    return DraftHead.for_target(model).float()


def parse_extra(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise typer.BadParameter(f"--extra must be NAME=PATH, got {text!r}")
    return name, Path(path).expanduser()


def main(config: Path = typer.Option(..., exists=True, dir_okay=False),
         seed: list[int] = typer.Option([], help="a training seed whose random initialization to include"),
         extra: list[str] = typer.Option([], help="NAME=PATH of another drafter to include (e.g. a shared start)"),
         out: Path = typer.Option(...)) -> None:
    cfg = load_eval_config(config)
    target = load_target(cfg.target, dtype="fp32")
    paths = {name: spec.path for name, spec in cfg.drafters.items() if spec.path is not None}
    paths.update(parse_extra(e) for e in extra)
    missing = [f"{n} ({p})" for n, p in paths.items() if not p.exists()]
    if missing:
        raise typer.BadParameter(f"drafters not found: {', '.join(missing)}")
    heads = {name: load_head(path, target.model) for name, path in paths.items()}
    heads.update({f"init-seed{s}": random_init(target.model, s) for s in seed})
    names = list(heads)
    matrix = {a: {b: round(weight_distance(heads[a], heads[b]), 4) for b in names} for a in names}
    command = (f"python benchmarks/weight_distances.py --config {config}" + "".join(f" --seed {s}" for s in seed)
               + "".join(f" --extra {e}" for e in extra) + f" --out {out}")
    lines = [f"Command: `{command}`", "", "Weight distance ||a − b|| / mean(||a||, ||b||) over the trained weights; "
             "`init-seed<k>` is the random initialization the trainer draws for seed k.", "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
             *(f"| {a} | " + " | ".join(f"{matrix[a][b]:.3f}" for b in names) + " |" for a in names), ""]
    write_text(out, "\n".join(lines))
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(matrix, indent=2)))
    print("\n".join(lines))


if __name__ == "__main__":
    typer.run(main)
