"""The `taps` command: every command group installed under the `taps.commands` entry points.

The engine, training, evaluation and serving each register their own commands (pyproject.toml lists them), so
no package imports the layers above it just to build the command line.
"""

from __future__ import annotations

from importlib.metadata import entry_points

import typer
from transformers.utils import logging as hf_logging

GROUP = "taps.commands"


def build_app() -> typer.Typer:
    app = typer.Typer(help="TAPS: task-aware speculative decoding.", no_args_is_help=True,
                      pretty_exceptions_enable=False)
    hf_logging.disable_progress_bar()
    groups = sorted(entry_points(group=GROUP), key=lambda e: e.name)
    if not groups:
        raise RuntimeError(f"no {GROUP} entry points: install the project (pip install -e .)")
    for group in groups:
        group.load()(app)
    return app


app = build_app()
