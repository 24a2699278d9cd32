"""How much faster live decoding gets when prompts run in lock step (taps_engine/lockstep.py), with and without
path verification, and that each prompt gets what it gets alone.

On the same prompts, sampling seeds, policies and tree: every prompt decoded alone (`Decoder.generate`), then all
of them together (`generate_batch`: one head forward per tree level and one target forward per step for all), then
together with path verification (the target run on the accepted paths only). Per prompt and policy the tokens are
compared; in fp32 they should be equal (a sampled token can flip only where rounding of a different forward shape
crosses a sampling threshold). This is what `taps eval` does with `live_lanes` and `path_verification`, e.g. for
the study's T=1 part.

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/live_lanes.py --n 8 --temperature 1 --out results/engine/live_lanes.json
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from policy_table import DRAFTERS, parse_args, setup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "results/engine/live_lanes.json", argv, lambda p: p.add_argument(
        "--temperature", type=float, default=1.0))
    from taps_engine.acceptance import SamplingParams
    from taps_engine.costs import machine, machine_line
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.lockstep import generate_batch

    target, decoders, prompts = setup(args)
    params = [SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=i)
              for i in range(len(prompts))]
    rows = []
    for policy, decoder in decoders.items():
        start = time.perf_counter()
        alone = [decoder.generate(p, s) for p, s in zip(prompts, params)]
        seconds = {"alone": time.perf_counter() - start}
        outputs = {}
        for mode, path_only in (("lock step", False), ("path", True)):
            start = time.perf_counter()
            outputs[mode] = generate_batch(decoder, prompts, params, path_only=path_only)
            seconds[mode] = time.perf_counter() - start
        row = {"policy": policy, "tau alone": round(sum(r.tau for r in alone) / len(prompts), 4)}
        for mode, results in outputs.items():
            row[f"tau {mode}"] = round(sum(r.tau for r in results) / len(prompts), 4)
            row[f"equal outputs {mode}"] = sum(a.token_ids == b.token_ids for a, b in zip(alone, results))
        row.update({f"{mode} s": round(s, 2) for mode, s in seconds.items()})
        row.update({f"speedup {mode}": round(seconds["alone"] / seconds[mode], 2) for mode in outputs})
        rows.append(row)
        print(row, file=sys.stderr)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/live_lanes.py", *(argv or sys.argv[1:])])
    report = {"command": command, "machine": machine(), "drafters": DRAFTERS, "n_prompts": len(prompts),
              "tree": "60/5/10", "dtype": "fp32", "temperature": args.temperature,
              "max_new_tokens": args.max_new_tokens, "policies": rows}
    write_json(args.out, report)
    columns = list(rows[0])
    lines = ["# Live decoding: one prompt at a time vs all in lock step", "", f"Command: `{command}`", "",
             f"Machine: {machine_line(report['machine'])}. SmolLM2 in fp32, the shipped drafters {DRAFTERS}, tree "
             f"60/5/10, {len(prompts)} prompts ({args.n} GSM8K + {args.n} MT-Bench first turns) in one batch, "
             f"{args.max_new_tokens} new tokens, T={args.temperature:g}, prompt i sampled with seed i in both modes.",
             "", "| " + " | ".join(columns) + " |", "|---|" + "---|" * (len(columns) - 1),
             *("| " + " | ".join(f"{r[c]}/{len(prompts)}" if c.startswith("equal") else str(r[c]) for c in columns)
               + " |" for r in rows), "",
             "Modes: `alone` is `Decoder.generate` per prompt; `lock step` is `generate_batch` (one head forward per "
             "tree level and one target forward over every lane's tree per step); `path` is `generate_batch(..., "
             "path_only=True)`, which runs the target on the accepted path only (an evaluation mode for τ: "
             "its time is not a serving speed)."]
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    return 0 if all(r[c] == len(prompts) for r in rows for c in r if c.startswith("equal")) else 1


if __name__ == "__main__":
    sys.exit(main())
