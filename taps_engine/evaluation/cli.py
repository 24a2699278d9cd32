"""`taps eval`: run (or resume) an experiment config and write its records, tables and plots."""

from __future__ import annotations

import json
import os
import platform
import shlex
from dataclasses import asdict
import sys
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..cli_common import console, fail
from ..costs import cpu_model
from ..fileio import atomic_write, write_json
from ..settings import numerics_dtype
from ..head import weight_distance
from ..target import Target, load_target
from .config import AVERAGE, EvalConfig, load_eval_config
from .plots import draw_all
from .report import (accuracy_markdown, aggregate, category_markdown, category_rows, comparison_markdown, comparisons,
                     oracle_markdown, separation_markdown, separation_rows, speed_markdown, tau_markdown, tau_tables)
from .runner import RecordStore, Run, config_items, expand_runs, load_heads, run_experiment


def environment(device: str, dtype: str) -> dict:
    """Versions and machine, so a table can be compared with another machine's."""
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": device, "dtype": dtype,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def parent_distances(cfg: EvalConfig, runs: list[Run], target: Target) -> list[dict]:
    """The weight distance between the two parents of every averaged drafter among the runs."""
    pairs = list(dict.fromkeys(tuple(r.spec.drafters) for r in runs if r.spec is not None and r.policy == AVERAGE))
    heads = load_heads(cfg, target, {name for pair in pairs for name in pair}) if pairs else {}
    return [{"parents": list(pair), "distance": round(weight_distance(heads[pair[0]], heads[pair[1]]), 4)}
            for pair in pairs]


def distance_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    return ["### Parents of the averaged drafters", "",
            "Weight distance ||a − b|| / mean(||a||, ||b||) over the trained weights.", "",
            *(f"- {' and '.join(r['parents'])}: {r['distance']:.3f}" for r in rows), ""]


def write_report(cfg: EvalConfig, out_dir: Path, command: str, env: dict,
                 target: Target | None = None) -> list[Path]:
    runs = expand_runs(cfg)
    items = config_items(cfg)
    current = RecordStore(out_dir / "records.jsonl").current(runs)
    reported = {v["run"] for v in current.values()}
    unchecked = [r.id for r in runs if r.missing and r.id in reported]
    if unchecked:
        console.print(f"[yellow]reported from stored records, unchecked (drafters not on this machine): "
                      f"{', '.join(unchecked)}[/yellow]")
    rows = aggregate(runs, current, items, cfg.seeds)
    if not rows:
        raise ValueError(f"{out_dir} has no records for this config yet")
    tables = tau_tables(rows, runs, cfg.benchmarks)
    differences = comparisons(cfg.comparisons, runs, current, items, cfg.seeds)
    write_json(out_dir / "records.json", rows)
    write_json(out_dir / "tables.json", tables)
    write_json(out_dir / "comparisons.json", differences)
    categories = category_rows(runs, current, items, seeds=cfg.seeds)
    nodes = separation_rows(runs, current, items, cfg.seeds)
    write_json(out_dir / "categories.json", categories)
    write_json(out_dir / "separation.json", nodes)
    distances = parent_distances(cfg, runs, target) if target is not None else []
    if distances:
        write_json(out_dir / "averaging.json", distances)
    plots = draw_all(rows, runs, cfg.benchmarks, out_dir / "plots")
    n = {b: len(v) for b, v in items.items()}
    lines = [f"# Experiment `{cfg.name}`", "", f"Command: `{command}`", "",
             f"Target `{cfg.target}` ({env['dtype']} on {env['device']}), tree {asdict(cfg.tree)}, "
             f"max {cfg.max_new_tokens} new tokens per turn, seed {cfg.seed}; prompts per benchmark: {n} "
             "(MT-Bench: both turns, the second after the model's own first answer).", "",
             f"Machine: {env['cpu']}, {env['torch_threads']} torch threads"
             + (f", GPU {env['gpu']}" if env["gpu"] else "") + f"; python {env['python']}, torch {env['torch']}, "
             f"transformers {env['transformers']}.", "",
             "τ = tokens committed per target verification step (micro-average over steps).", ""]
    if unchecked:
        lines += [f"Reported from stored records, not checked against their drafters (not on the machine that wrote "
                  f"this report): {', '.join(unchecked)}.", ""]
    lines += tau_markdown(tables) + comparison_markdown(differences) + accuracy_markdown(rows, runs, cfg.benchmarks) \
        + speed_markdown(rows, runs) + category_markdown(categories) + oracle_markdown(rows) \
        + separation_markdown(nodes) + distance_markdown(distances)
    lines += ["### Plots", "", *(f"![{p.stem}](plots/{p.name})" for p in plots), ""]
    report = out_dir / "README.md"
    atomic_write(report, lambda tmp: Path(tmp).write_text("\n".join(lines)))
    return [out_dir / "records.json", out_dir / "tables.json", out_dir / "comparisons.json",
            out_dir / "categories.json", out_dir / "separation.json", report, *plots]


def parse_shard(text: str | None) -> tuple[int, int]:
    """`K/N` -> (k, n); ValueError with the expected form otherwise."""
    if text is None:
        return 0, 1
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit()) or int(n) < 1 or int(k) >= int(n):
        raise ValueError(f"--shard must be K/N with 0 <= K < N, e.g. 0/2; got {text!r}")
    return int(k), int(n)


def eval_command(
    config: Path = typer.Option(..., "--config", help="Experiment YAML (see configs/eval/)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="A profile of the config, e.g. small or paper."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: results/<name>)."),
    report_only: bool = typer.Option(False, "--report-only", help="Rebuild tables and plots from stored records."),
    runs: Optional[str] = typer.Option(None, "--runs", help="Only the runs whose id matches this regex."),
    benchmark: Optional[list[str]] = typer.Option(None, "--benchmark", help="Only this benchmark of the config "
                                                  "(repeatable): run it, or report it alone."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: only every N-th prompt from the K-th (0-based); "
                                        "N processes with shards 0/N .. N-1/N fill one records file together."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Torch threads, over the profile's (e.g. 1 "
                                          "per shard process)."),
) -> None:
    """Run an evaluation matrix (resumable) and write records.json, τ tables (Markdown + JSON) and plots."""
    command = "taps " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        cfg = load_eval_config(config, profile)
        out_dir = out or Path("results") / cfg.name
        if benchmark:
            cfg = cfg.only(benchmark)
        share = parse_shard(shard)
        if threads or cfg.threads:
            torch.set_num_threads(threads or cfg.threads)
        target = load_target(cfg.target, dtype=numerics_dtype(cfg.dtype, cfg.numerics))
        env = environment(str(target.device), str(target.dtype).replace("torch.", ""))
        stored_env = out_dir / "environment.json"
        if report_only and stored_env.exists():
            env = json.loads(stored_env.read_text())
        if not report_only:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TimeRemainingColumn())
            with Progress(*columns, console=console) as bar:
                task = bar.add_task("evaluating", total=None)
                run_experiment(cfg, out_dir, target,
                               progress=lambda done, total, what: bar.update(task, completed=done, total=total,
                                                                             description=what), only=runs,
                               shard=share)
            write_json(stored_env, env)
        written = write_report(cfg, out_dir, command, env, target)
    except ValueError as e:
        fail(str(e))
    for path in written:
        console.print(f"wrote {path}")
    console.print((out_dir / "README.md").read_text().split("### Accuracy")[0], markup=False)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
