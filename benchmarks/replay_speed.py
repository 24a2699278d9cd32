"""How much faster replay (taps_engine/replay.py) gets a T=0 τ table than live decoding, and that it is the same table.

On the same prompts, policies and tree: live decoding (every step verified by the target), replay one prompt at a
time (one plain greedy decoding and one feature forward per prompt, shared by every policy, then each policy's
drafting against the known continuation), and replay in lock step, as `taps eval` runs it (the references of all
prompts decoded together, then each policy's prompts replayed together, one head forward per tree level for
all). Each replay mode computes its references in a fresh directory, so their cost is counted. Per prompt and
policy, the accepted counts of every step are compared with live decoding's (or, with --no-live, between the
two replay modes); in fp32 they must be equal.

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/replay_speed.py --n 8 --out results/engine/replay_speed.json
"""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from pathlib import Path

from policy_table import DRAFTERS, parse_args, setup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, "results/engine/replay_speed.json", argv, lambda p: p.add_argument(
        "--no-live", dest="live", action="store_false",
        help="time the two replay modes only (live decoding costs the most)"))
    from taps_engine.acceptance import SamplingParams
    from taps_engine.costs import machine, machine_line
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.replay import References, replay, replay_batch

    target, decoders, prompts = setup(args)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    tree = next(iter(decoders.values())).tree

    def accepted(result) -> list[int]:
        return [s.accepted for s in result.steps]

    def timed(decode) -> tuple[dict, dict]:
        results, seconds = {}, {}
        for policy, decoder in decoders.items():
            start = time.perf_counter()
            results[policy] = decode(decoder)
            seconds[policy] = time.perf_counter() - start
        return results, seconds

    def one_at_a_time(references):
        return lambda decoder: [replay(decoder, references(p), params) for p in prompts]

    def lock_step(references):
        return lambda decoder: replay_batch(decoder, references.many(prompts), params)

    modes = {}   # mode -> (results per policy, seconds per policy, seconds of references)
    if args.live:
        modes["live"] = (*timed(lambda decoder: [decoder.generate(p, params) for p in prompts]), 0.0)
    for mode, fill, decode in (("replay", lambda refs: [refs(p) for p in prompts], one_at_a_time),
                               ("lock-step replay", lambda refs: refs.many(prompts), lock_step)):
        with tempfile.TemporaryDirectory() as cold:
            references = References(target, args.max_new_tokens, tree.depth + 2, size=len(prompts))
            references.directory = Path(cold)
            start = time.perf_counter()
            fill(references)
            reference_s = time.perf_counter() - start
            modes[mode] = (*timed(decode(references)), reference_s)
        print(f"{mode}: references {reference_s:.1f} s, policies {modes[mode][1]}", file=sys.stderr)

    baseline = next(iter(modes))
    rows = [{"policy": policy, **{f"tau {mode}": round(sum(r.tau for r in results[policy]) / len(prompts), 4)
                                  for mode, (results, _, _) in modes.items()},
             **{f"equal steps {mode}": sum(accepted(a) == accepted(b) for a, b in zip(modes[baseline][0][policy],
                                                                                    results[policy]))
                for mode, (results, _, _) in modes.items() if mode != baseline},
             **{f"{mode} s": round(seconds[policy], 2) for mode, (_, seconds, _) in modes.items()}}
            for policy in args.policy]
    totals = {mode: round(reference_s + sum(seconds.values()), 2) for mode, (_, seconds, reference_s) in modes.items()}
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/replay_speed.py", *(argv or sys.argv[1:])])
    report = {"command": command, "machine": machine(), "drafters": DRAFTERS, "n_prompts": len(prompts),
              "tree": "60/5/10", "dtype": "fp32", "max_new_tokens": args.max_new_tokens, "policies": rows,
              "reference_s": {mode: round(r, 2) for mode, (_, _, r) in modes.items() if mode != "live"},
              "total_s": totals, "speedup": {mode: round(totals[baseline] / t, 2) for mode, t in totals.items()
                                             if mode != baseline}}
    write_json(args.out, report)
    others = [m for m in modes if m != baseline]
    lines = ["# Replay vs live decoding for a T=0 τ table", "", f"Command: `{command}`", "",
             f"Machine: {machine_line(report['machine'])}. SmolLM2 in fp32, the shipped drafters {DRAFTERS}, tree 60/5/10, "
             f"{len(prompts)} prompts ({args.n} GSM8K + {args.n} MT-Bench first turns), {args.max_new_tokens} new "
             "tokens, greedy.", "",
             "| policy | " + " | ".join(f"τ {m}" for m in modes) + " | " +
             " | ".join(f"prompts with the steps of {baseline}: {m}" for m in others) + " | " +
             " | ".join(f"{m} s" for m in modes) + " |",
             "|---|" + "---|" * (2 * len(modes) + len(others)),
             *("| " + " | ".join([r["policy"], *(str(r[f"tau {m}"]) for m in modes),
                                  *(f"{r[f'equal steps {m}']}/{len(prompts)}" for m in others),
                                  *(str(r[f"{m} s"]) for m in modes)]) + " |" for r in rows), "",
             "References (one plain greedy decoding and one feature forward per prompt, shared by every policy): " +
             ", ".join(f"{m} {s} s" for m, s in report["reference_s"].items()) + ". Whole table: " +
             ", ".join(f"{m} {t} s" for m, t in totals.items()) + "; against " + baseline + ": " +
             ", ".join(f"**{x}x** faster ({m})" for m, x in report["speedup"].items()) + "."]
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    equal = all(r[f"equal steps {m}"] == len(prompts) for r in rows for m in others)
    return 0 if equal else 1

if __name__ == "__main__":
    sys.exit(main())
