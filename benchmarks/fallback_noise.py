"""Whether the fallback's noise allowance (taps_engine/economics.py, `StepEconomics.noise`) pays: the shipped
default drafters under each policy with the fallback judging its windows as it does now (speculation loses when
its mean gain is below zero by more than one standard error), with the earlier rule (below zero at all: noise 0),
and with no fallback, next to transformers and the engine's plain loop, interleaved per prompt (`taps bench
speed`'s harness and report). The default device tree, greedy, the default target in `--dtype auto`.

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/fallback_noise.py --prompts 5 --max-new-tokens 128 --out results/engine/fallback-noise.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
from functools import partial
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=5, help="prompts per benchmark (GSM8K and MT-Bench first turns)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--policy", action="append", default=[], help="repeatable; default confidence and sticky")
    p.add_argument("--out", type=Path, default=Path("results/engine/fallback-noise.json"))
    args = p.parse_args(argv)
    if args.prompts < 1 or args.max_new_tokens < 1:
        p.error("--prompts and --max-new-tokens must be positive")
    if args.out.suffix != ".json":
        p.error("--out must end in .json (the Markdown goes next to it)")
    from taps_engine import Decoder
    from taps_engine.cli import load_models
    from taps_engine.economics import StepEconomics
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.speed import bench_prompts, report_markdown, run_speed_bench
    from taps_engine.target import DEFAULT_TARGET
    from taps_engine.tree import default_tree

    target, heads = load_models(DEFAULT_TARGET, None, 0, 2, "auto")
    tree = default_tree(target.device)
    engines = {}
    for policy in args.policy or ["confidence", "sticky"]:
        engines[f"{policy} noise 1"] = Decoder(target, heads, policy, tree, fallback=True)
        engines[f"{policy} noise 0"] = earlier = Decoder(target, heads, policy, tree, fallback=True)
        earlier.economics = partial(StepEconomics, noise=0.0)
        engines[f"{policy} no fallback"] = Decoder(target, heads, policy, tree)
    report = run_speed_bench(target, engines, bench_prompts(args.prompts), args.max_new_tokens,
                             progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    markdown = report_markdown(report, shlex.join(["python", "benchmarks/fallback_noise.py", *sys.argv[1:]]))
    write_json(args.out, report)
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(markdown))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
