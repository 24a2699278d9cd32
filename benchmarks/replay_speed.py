"""How much faster replay (taps_engine/replay.py) gets a T=0 τ table than live decoding, and that it is the same table.

On the same prompts, policies and tree: live decoding (every step verified by the target) and replay (one plain
greedy decoding and one feature forward per prompt, shared by every policy, then each policy's drafting against
the known continuation). Replay's references are computed in a fresh directory, so their cost is counted. Per
prompt and policy, the accepted counts of every step are compared (in fp32 they must be equal).

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/replay_speed.py --n 8 --out results/engine/replay_speed.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from taps_engine.tree import TreeSettings

POLICIES = ("single", "confidence", "merged-trie")
DRAFTERS = {"math": "eagle2-math", "chat": "eagle2-chat"}   # shipped drafters, by directory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8, help="prompts per benchmark (GSM8K and MT-Bench first turns)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--policy", action="append", default=[], help=f"repeatable; default {', '.join(POLICIES)}")
    p.add_argument("--out", type=Path, default=Path("results/engine/replay_speed.json"))
    args = p.parse_args(argv)
    if args.n < 1 or args.max_new_tokens < 1:
        p.error("--n and --max-new-tokens must be positive")
    if args.out.suffix != ".json":
        p.error("--out must end in .json (the Markdown goes next to it)")
    args.policy = args.policy or list(POLICIES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from taps_engine import Decoder
    from taps_engine.acceptance import SamplingParams
    from taps_engine.costs import machine
    from taps_engine.drafter_specs import shipped_drafters
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.head import load_head
    from taps_engine.replay import References, replay
    from taps_engine.speed import bench_prompts
    from taps_engine.target import DEFAULT_TARGET, load_target

    target = load_target(DEFAULT_TARGET, dtype="fp32")
    shipped = shipped_drafters(DEFAULT_TARGET)
    heads = {name: load_head(shipped[directory], target.model) for name, directory in DRAFTERS.items()}
    tree = TreeSettings(total_tokens=60, depth=5, top_k=10)
    prompts = [[{"role": "user", "content": p}] for _, p in bench_prompts(args.n)]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    decoders = {policy: Decoder(target, heads, policy, tree) for policy in args.policy}
    decoders[args.policy[0]].generate(prompts[0], max_new_tokens=8)   # warm-up

    def accepted(result) -> list[int]:
        return [s.accepted for s in result.steps]

    live, live_s = {}, {}
    for policy, decoder in decoders.items():
        start = time.perf_counter()
        live[policy] = [decoder.generate(p, params) for p in prompts]
        live_s[policy] = time.perf_counter() - start
        print(f"live {policy}: {live_s[policy]:.1f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as cold:
        references = References(target, args.max_new_tokens, tree.depth + 2, size=len(prompts))
        references.directory = Path(cold)
        start = time.perf_counter()
        for p in prompts:
            references(p)
        reference_s = time.perf_counter() - start
        replayed, replay_s = {}, {}
        for policy, decoder in decoders.items():
            start = time.perf_counter()
            replayed[policy] = [replay(decoder, references(p), params) for p in prompts]
            replay_s[policy] = time.perf_counter() - start
            print(f"replay {policy}: {replay_s[policy]:.1f} s", file=sys.stderr)

    rows = [{"policy": policy,
             "tau_live": round(sum(r.tau for r in live[policy]) / len(prompts), 4),
             "tau_replay": round(sum(r.tau for r in replayed[policy]) / len(prompts), 4),
             "prompts_with_equal_steps": sum(accepted(a) == accepted(b) for a, b in zip(live[policy], replayed[policy])),
             "live_s": round(live_s[policy], 2), "replay_s": round(replay_s[policy], 2)} for policy in args.policy]
    total_live, total_replay = sum(live_s.values()), reference_s + sum(replay_s.values())
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/replay_speed.py", *(argv or sys.argv[1:])])
    report = {"command": command, "machine": machine(), "drafters": DRAFTERS, "n_prompts": len(prompts),
              "tree": "60/5/10",
              "dtype": "fp32", "max_new_tokens": args.max_new_tokens, "policies": rows,
              "reference_s": round(reference_s, 2), "live_total_s": round(total_live, 2),
              "replay_total_s": round(total_replay, 2), "speedup": round(total_live / total_replay, 2)}
    write_json(args.out, report)
    lines = ["# Replay vs live decoding for a T=0 τ table", "", f"Command: `{command}`", "",
             f"Machine: {report['machine']}. SmolLM2 in fp32, the shipped drafters {DRAFTERS}, tree 60/5/10, "
             f"{len(prompts)} prompts ({args.n} GSM8K + {args.n} MT-Bench first turns), {args.max_new_tokens} new "
             "tokens, greedy.", "",
             "| policy | τ live | τ replay | prompts with equal steps | live s | replay s |", "|---|---|---|---|---|---|",
             *(f"| {r['policy']} | {r['tau_live']} | {r['tau_replay']} | {r['prompts_with_equal_steps']}/"
               f"{len(prompts)} | {r['live_s']} | {r['replay_s']} |" for r in rows), "",
             f"Replay's references (one plain greedy decoding and one feature forward per prompt, shared by every "
             f"policy): {report['reference_s']} s. Whole table: live {report['live_total_s']} s, replay "
             f"{report['replay_total_s']} s: **{report['speedup']}x** faster."]
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    print("\n".join(lines))
    equal = all(r["prompts_with_equal_steps"] == len(prompts) for r in rows)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
