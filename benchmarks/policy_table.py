"""What the policy-table benchmarks (replay_speed.py, live_lanes.py) share: their options and their setup, SmolLM2
in fp32 with the shipped math and chat drafters, the paper tree 60/5/10, GSM8K and MT-Bench first turns."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

POLICIES = ("single", "confidence", "merged-trie")
DRAFTERS = {"math": "eagle2-math", "chat": "eagle2-chat"}   # shipped drafters, by directory


def parse_args(doc: str, default_out: str, argv: list[str] | None,
               extra: Callable[[argparse.ArgumentParser], None] = lambda p: None) -> argparse.Namespace:
    """`--n`, `--max-new-tokens`, `--policy` (repeatable) and `--out` (JSON; the Markdown goes next to it), plus
    what `extra` adds."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8, help="prompts per benchmark (GSM8K and MT-Bench first turns)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--policy", action="append", default=[], help=f"repeatable; default {', '.join(POLICIES)}")
    p.add_argument("--out", type=Path, default=Path(default_out))
    extra(p)
    args = p.parse_args(argv)
    if args.n < 1 or args.max_new_tokens < 1:
        p.error("--n and --max-new-tokens must be positive")
    if args.out.suffix != ".json":
        p.error("--out must end in .json (the Markdown goes next to it)")
    args.policy = args.policy or list(POLICIES)
    return args


def setup(args: argparse.Namespace) -> tuple:
    """(target, {policy: Decoder}, chat prompts), a decoder warmed up."""
    from taps_engine import Decoder
    from taps_engine.drafter_specs import shipped_drafters
    from taps_engine.head import load_head
    from taps_engine.speed import bench_prompts
    from taps_engine.target import DEFAULT_TARGET, load_target
    from taps_engine.tree import TreeSettings

    target = load_target(DEFAULT_TARGET, dtype="fp32")
    shipped = shipped_drafters(DEFAULT_TARGET)
    heads = {name: load_head(shipped[directory], target.model) for name, directory in DRAFTERS.items()}
    tree = TreeSettings(total_tokens=60, depth=5, top_k=10)
    prompts = [[{"role": "user", "content": p}] for _, p in bench_prompts(args.n)]
    decoders = {policy: Decoder(target, heads, policy, tree) for policy in args.policy}
    decoders[args.policy[0]].generate(prompts[0], max_new_tokens=8)   # warm-up
    return target, decoders, prompts
