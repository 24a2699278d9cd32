"""The arguments benchmark scripts over GSM8K and MT-Bench prompts share, checked the same way everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path


def prompt_bench_parser(doc: str, prompts: int, max_new_tokens: int, out: str,
                        tokens_help: str | None = None) -> argparse.ArgumentParser:
    """A parser with `--prompts` (per benchmark), `--max-new-tokens` and `--out` (a JSON report); a script adds
    its own arguments and parses with `parse_prompt_bench`."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=prompts,
                   help="prompts per benchmark (GSM8K and MT-Bench first turns)")
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=tokens_help)
    p.add_argument("--out", type=Path, default=Path(out))
    return p


def parse_prompt_bench(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, or an argparse error naming the one that cannot work."""
    args = p.parse_args(argv)
    if min(args.prompts, args.max_new_tokens) < 1:
        p.error("--prompts and --max-new-tokens must be positive")
    if args.out.suffix != ".json":
        p.error("--out must end in .json (the Markdown goes next to it)")
    return args
