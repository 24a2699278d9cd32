"""What packing the target's fp32 linear layers for oneDNN (taps_engine/packing.py) buys on this CPU, side by side
with PyTorch's default fp32 product (MKL):

1. each distinct linear shape of the target at 1-64 rows: milliseconds both ways, and whether row 0's result is
   the same bit for bit whatever the row count;
2. the verify cost curve (one verification of n tokens after a 200-token context) of both targets, alternating;
3. greedy decoding of GSM8K and MT-Bench prompts by the engine's plain loop and by sticky routing over the
   shipped drafters (fallback on), on both targets, interleaved per prompt (`taps bench speed`'s harness; the
   packed target is the report's baseline: transformers `generate` and "engine plain" run on it).

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/packed_linear.py --prompts 5 --max-new-tokens 128 --out results/engine/packed_linear.json
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

ROWS = (1, 2, 4, 17, 64)


def _ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


@torch.inference_mode()
def shape_table(model: torch.nn.Module, reps: int) -> list[dict]:
    """Both products for each distinct (out, in) shape among the packed model's linear layers."""
    from taps_engine.packing import PackedLinear

    layers = [m for m in model.modules() if isinstance(m, PackedLinear)]
    counts = Counter((m.out_features, m.in_features) for m in layers)
    shapes = {(m.out_features, m.in_features): m for m in layers}
    generator = torch.Generator().manual_seed(0)
    rows = []
    for (out_f, in_f), layer in shapes.items():
        x = torch.randn(max(ROWS), in_f, generator=generator)
        row0 = layer(x[:1])[0]
        row = {"shape": f"{out_f} x {in_f}", "layers": counts[out_f, in_f],
               "row0_invariant": all(torch.equal(layer(x[:n])[0], row0) for n in ROWS)}
        for n in ROWS:
            row[f"mkl_ms_{n}"] = round(_ms(lambda: torch.nn.functional.linear(x[:n], layer.weight, layer.bias), reps), 3)
            row[f"packed_ms_{n}"] = round(_ms(lambda: layer(x[:n]), reps), 3)
        rows.append(row)
    return rows


def cost_curves(packed, plain, rounds: int) -> dict[str, dict[int, float]]:
    """Verify cost curves of both targets, alternating `rounds` times, the median per size."""
    from taps_engine.costs import measure_verify_costs

    runs = {"packed": [], "mkl": []}
    for _ in range(rounds):
        runs["packed"].append(measure_verify_costs(packed, reps=3))
        runs["mkl"].append(measure_verify_costs(plain, reps=3))
    return {name: {n: round(statistics.median(c[n] for c in curves), 1) for n in curves[0]}
            for name, curves in runs.items()}


def markdown(report: dict, command: str) -> str:
    from taps_engine.costs import machine_line
    from taps_engine.speed import report_markdown

    lines = [f"Command: `{command}`", "", f"Machine: {machine_line(report['speed']['machine'])}.", "",
             "Milliseconds per product (median of the reps) for each linear shape of the target, MKL / packed:", "",
             "| shape | layers | " + " | ".join(f"{n} rows" for n in ROWS) + " | row 0 same for every row count |",
             "|---|---|" + "---|" * len(ROWS) + "---|"]
    for row in report["shapes"]:
        cells = " | ".join(f"{row[f'mkl_ms_{n}']:.3f} / {row[f'packed_ms_{n}']:.3f}" for n in ROWS)
        lines.append(f"| {row['shape']} | {row['layers']} | {cells} | {row['row0_invariant']} |")
    curves = report["verify_ms"]
    sizes = list(curves["mkl"])
    lines += ["", "Verify cost (ms for one verification of n tokens after a 200-token context, median over "
              f"{report['rounds']} alternating rounds):", "",
              "| n | " + " | ".join(str(n) for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for name, curve in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{curve[n]:.1f}" for n in sizes) + " |")
        lines.append(f"| {name}, x its one token | " + " | ".join(f"{curve[n] / curve[sizes[0]]:.2f}"
                                                                for n in sizes) + " |")
    lines += ["", "Greedy decoding, interleaved per prompt (the report's baseline target is the packed one; rows "
              "named `(mkl)` run on the target without packing):", "",
              report_markdown(report["speed"], command).split("\n", 2)[2]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=5, help="prompts per benchmark (GSM8K and MT-Bench first turns)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=20, help="repetitions per product in the shape table")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of the verify cost curves")
    p.add_argument("--out", type=Path, default=Path("results/engine/packed_linear.json"))
    args = p.parse_args(argv)
    if min(args.prompts, args.max_new_tokens, args.reps, args.rounds) < 1:
        p.error("--prompts, --max-new-tokens, --reps and --rounds must be positive")
    if args.out.suffix != ".json":
        p.error("--out must end in .json (the Markdown goes next to it)")
    from taps_engine import Decoder
    from taps_engine.decoding import PlainDecoder
    from taps_engine.drafter_specs import default_drafters
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.head import load_head
    from taps_engine.speed import bench_prompts, run_speed_bench
    from taps_engine.target import DEFAULT_TARGET, load_target
    from taps_engine.tree import default_tree

    packed = load_target(DEFAULT_TARGET, dtype="fp32")
    plain = load_target(DEFAULT_TARGET, dtype="fp32", pack=False)
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    say("linear shapes")
    shapes = shape_table(packed.model, args.reps)
    say("verify cost curves")
    curves = cost_curves(packed, plain, args.rounds)
    paths = default_drafters(DEFAULT_TARGET)
    tree = default_tree(packed.device)
    engines = {}
    for name, target in (("", packed), (" (mkl)", plain)):
        heads = {n: load_head(path, target.model) for n, path in paths.items()}
        if name:
            engines[f"engine plain{name}"] = PlainDecoder(target)
        engines[f"sticky{name}"] = Decoder(target, heads, "sticky", tree, fallback=True)
    speed = run_speed_bench(packed, engines, bench_prompts(args.prompts), args.max_new_tokens, progress=say)
    report = {"shapes": shapes, "rounds": args.rounds, "verify_ms": curves, "speed": speed}
    text = markdown(report, shlex.join(["python", "benchmarks/packed_linear.py", *sys.argv[1:]]))
    write_json(args.out, report)
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
