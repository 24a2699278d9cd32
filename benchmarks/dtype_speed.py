"""fp32 vs bf16 on this CPU for what decoding does: a one-token forward, a 61-token tree-sized forward, and a
prompt prefill, the two dtypes interleaved (rounds alternate, so both see the same machine load).

What `dtype auto` should pick on a CPU is whichever of the two is faster here; CPU flags alone do not say (a CPU
with AVX512-BF16 but no AMX runs bf16 matmuls faster, yet may run a whole forward slower).

Usage: python benchmarks/dtype_speed.py --rounds 3 --out results/engine/dtype_speed.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/engine/dtype_speed.md"))
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be positive")
    import torch

    from taps_engine.costs import machine_line, measure_verify_costs
    from taps_engine.fileio import write_report
    from taps_engine.speed import bench_prompts
    from taps_engine.target import DEFAULT_TARGET, load_target
    from taps_engine.verifier import TargetVerifier

    targets = {dtype: load_target(DEFAULT_TARGET, dtype=dtype) for dtype in ("fp32", "bf16")}
    ids = targets["fp32"].format.encode([{"role": "user", "content": bench_prompts(1)[1][1]}])
    seconds: dict[str, dict[str, list[float]]] = {dtype: {"decode": [], "tree": [], "prefill": []}
                                                  for dtype in targets}
    for round_ in range(args.rounds + 1):    # the first round warms up
        for dtype, target in targets.items():
            costs = measure_verify_costs(target, reps=3, sizes=(1, 61))   # median ms after a 200-token prefix
            with torch.inference_mode():
                start = time.perf_counter()
                TargetVerifier(target).prefill(ids)
                prefill = (time.perf_counter() - start) / len(ids)
            if round_:
                times = seconds[dtype]
                times["decode"].append(costs[1] / 1e3)
                times["tree"].append(costs[61] / 1e3)
                times["prefill"].append(prefill)

    def best(dtype: str, what: str) -> float:
        return min(seconds[dtype][what])

    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/dtype_speed.py", *(argv or sys.argv[1:])])
    lines = ["# fp32 vs bf16 on this CPU", "", f"Command: `{command}`", "", f"Machine: {machine_line()}.", "",
             f"SmolLM2-135M-Instruct, best of {args.rounds} interleaved rounds: one decoding forward of 1 token and "
             "one of 61 tokens (a paper-sized tree) after a 200-token prefix (ms, each the median of 3), and the "
             f"prefill of a {len(ids)}-token prompt (ms per prompt token).", "",
             "| what | fp32 | bf16 | bf16 x fp32 time |", "|---|---|---|---|"]
    for what in ("decode", "tree", "prefill"):
        fp32, bf16 = best("fp32", what), best("bf16", what)
        lines.append(f"| {what} | {1e3 * fp32:.2f} | {1e3 * bf16:.2f} | {bf16 / fp32:.2f} |")
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
