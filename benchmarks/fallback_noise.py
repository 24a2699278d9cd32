"""Whether the fallback's noise allowance (taps_engine/economics.py, `StepEconomics.noise`) pays, in the setting
`make run` decodes with (`taps demo`: the shipped drafters, the default routing policy, the CPU's cost-aware tree):
the fallback judging its windows as it does now (speculation loses when its mean gain is below zero by more than one
standard error) against the earlier rule (below zero at all: noise 0). `--policy` and `--drafter` put other
drafters or another policy in that setting (a specialist on the other domain's prompts, say).

Two parts, each holding the rules side by side:
- `--demo-runs R`: `make run`'s own math and chat prompts, R times, each run a fresh decoder per rule (as `taps
  demo` starts one), the rules' order alternating between runs, next to the engine's plain loop on the same prompt:
  τ, the fallback's plain steps, and time against the plain loop with a 95% bootstrap interval over the runs.
- `--prompts N`: N GSM8K + N MT-Bench first turns through `taps bench speed`'s harness (interleaved per prompt,
  transformers and the engine's plain loop beside), with a third engine speculating at every step (no fallback).

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/fallback_noise.py --demo-runs 10 --prompts 8 --out results/engine/fallback-noise-probe.json
       python benchmarks/fallback_noise.py --demo-runs 0 --prompts 8 --policy single \
           --drafter math=taps_engine/drafters/smollm2-135m-instruct/eagle2-math --out results/engine/x.json
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from functools import partial
from pathlib import Path

KEPT = "noise 1"   # the rule the engine uses, and the paired ratios' baseline
RULES = {KEPT: 1.0, "noise 0": 0.0}


def decoder(target, heads, policy: str, tree, noise: float | None):
    """A decoder with the fallback judging by `noise` standard errors (None: no fallback)."""
    from taps_engine import Decoder
    from taps_engine.economics import StepEconomics

    engine = Decoder(target, heads, policy, tree, fallback=noise is not None)
    if noise is not None:
        engine.economics = partial(StepEconomics, noise=noise)
    return engine


def demo_runs(target, heads, policy: str, tree, runs: int, max_new_tokens: int) -> list[dict]:
    """One row per (run, prompt, rule): τ, the fallback's plain steps and seconds, beside the plain loop's."""
    from taps_engine.acceptance import SamplingParams
    from taps_engine.cli import DEMO_PROMPTS
    from taps_engine.decoding import PlainDecoder

    plain = PlainDecoder(target)
    plain.generate("Hello!", SamplingParams(4))
    params = SamplingParams(max_new_tokens)
    rows = []
    for run in range(runs):
        order = list(RULES) if run % 2 == 0 else list(reversed(RULES))
        engines = {rule: decoder(target, heads, policy, tree, RULES[rule]) for rule in order}
        for engine in engines.values():
            engine.generate("Hello!", SamplingParams(4))   # as `taps demo` warms its decoder
        for kind, prompt in DEMO_PROMPTS.items():
            messages = target.format.user_prompt(prompt)
            base = plain.generate(messages, params)
            for rule, engine in engines.items():
                r = engine.generate(messages, params)
                rows.append({"run": run, "prompt": kind, "rule": rule, "tau": round(r.tau, 3),
                             "drafted_tau": round(r.drafted_tau, 3), "plain_steps": r.plain_steps,
                             "steps": len(r.steps), "tokens": len(r.token_ids), "seconds": round(r.seconds, 4),
                             "plain_seconds": round(base.seconds, 4), "same_as_plain": r.token_ids == base.token_ids})
        print(f"demo run {run + 1}/{runs}", file=sys.stderr, flush=True)
    return rows


def demo_summary(rows: list[dict]) -> list[dict]:
    """Per prompt and rule: τ over the runs, the runs whose τ fell to 2 or below, plain steps, x the plain loop, and
    x the first rule (paired over runs: the same run's seconds)."""
    from taps_engine.evaluation.intervals import ratio_interval

    out = []
    for kind in dict.fromkeys(r["prompt"] for r in rows):
        first = [r for r in rows if r["prompt"] == kind and r["rule"] == KEPT]
        for rule in RULES:
            mine = [r for r in rows if r["prompt"] == kind and r["rule"] == rule]
            paired = ratio_interval([r["seconds"] for r in first], [r["seconds"] for r in mine])
            taus = [r["tau"] for r in mine]
            interval = ratio_interval([r["plain_seconds"] for r in mine], [r["seconds"] for r in mine])
            out.append({"prompt": kind, "rule": rule, "runs": len(mine), "tau_mean": round(statistics.fmean(taus), 3),
                        "tau_min": min(taus), "runs_tau_at_most_2": sum(t <= 2 for t in taus),
                        "plain_steps": sum(r["plain_steps"] for r in mine), "steps": sum(r["steps"] for r in mine),
                        "x_plain": round(sum(r["plain_seconds"] for r in mine) / sum(r["seconds"] for r in mine), 3),
                        "x_plain_interval": list(interval) if interval else None,
                        "x_first_rule": round(sum(r["seconds"] for r in first) / sum(r["seconds"] for r in mine), 3),
                        "x_first_rule_interval": list(paired) if paired else None,
                        "same_as_plain": sum(r["same_as_plain"] for r in mine)})
    return out


def demo_markdown(summary: list[dict], runs: int, max_new_tokens: int) -> list[str]:
    lines = [f"`make run`'s prompts, {runs} runs, a fresh decoder per rule and run, {max_new_tokens} new tokens, "
             f"greedy; x plain loop = the plain loop's seconds over the rule's, x {KEPT} = its seconds "
             "over the rule's in the same runs, each summed over the runs (95% bootstrap intervals over runs):", "",
             f"| prompt | rule | τ mean | τ min | runs with τ ≤ 2 | plain steps | x plain loop | x {KEPT} "
             "| same as plain |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['prompt']} | {s['rule']} | {s['tau_mean']:.2f} | {s['tau_min']:.2f} | "
                     f"{s['runs_tau_at_most_2']}/{s['runs']} | {s['plain_steps']}/{s['steps']} | "
                     f"{s['x_plain']:.2f}{_ci(s['x_plain_interval'])} | "
                     f"{s['x_first_rule']:.2f}{_ci(s['x_first_rule_interval'])} | {s['same_as_plain']}/{s['runs']} |")
    return lines + [""]


def _ci(interval: list[float] | None) -> str:
    return f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-runs", type=int, default=8, help="runs of make run's two prompts per rule (0: skip)")
    p.add_argument("--demo-tokens", type=int, default=96, help="new tokens per demo prompt (taps demo's default)")
    p.add_argument("--prompts", type=int, default=5, help="GSM8K and MT-Bench prompts each (0: skip that part)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--policy", default=None, help="default: the default routing policy (make run's)")
    p.add_argument("--drafter", action="append", default=[], help="NAME=PATH (repeatable); default: the shipped ones")
    p.add_argument("--out", type=Path, default=Path("results/engine/fallback-noise-probe.json"))
    args = p.parse_args(argv)
    if min(args.demo_runs, args.prompts) < 0 or args.demo_runs + args.prompts == 0:
        p.error("--demo-runs and --prompts must not be negative, and one of them positive")
    if min(args.demo_tokens, args.max_new_tokens) < 1:
        p.error("--demo-tokens and --max-new-tokens must be positive")
    if args.out.suffix != ".json":
        p.error("--out must end in .json (the Markdown goes next to it)")
    from taps_engine.cli import load_models
    from taps_engine.costs import machine, machine_line
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.policies import DEFAULT_ROUTING, policy_spec
    from taps_engine.speed import bench_prompts, report_markdown, run_speed_bench
    from taps_engine.target import DEFAULT_TARGET
    from taps_engine.tree import speed_tree

    policy = args.policy or DEFAULT_ROUTING
    try:
        policy_spec(policy)
        target, heads = load_models(DEFAULT_TARGET, args.drafter, 0, 2, "auto")
    except ValueError as e:
        p.error(str(e))
    tree = speed_tree(target.device)
    command = shlex.join(["python", "benchmarks/fallback_noise.py", *sys.argv[1:]])
    report = {"command": command, "machine": machine(), "target": target.name,
              "dtype": str(target.dtype).replace("torch.", ""), "policy": policy, "tree": tree.label,
              "drafters": list(heads)}
    lines = [f"Command: `{command}`", "", f"Target {target.name} ({report['dtype']}), drafters "
             f"{', '.join(heads)}, policy {policy}, tree {tree.label}; {machine_line()}.", ""]
    if args.demo_runs:
        rows = demo_runs(target, heads, policy, tree, args.demo_runs, args.demo_tokens)
        report["demo"] = {"rows": rows, "summary": demo_summary(rows)}
        lines += demo_markdown(report["demo"]["summary"], args.demo_runs, args.demo_tokens)
    if args.prompts:
        engines = {rule: decoder(target, heads, policy, tree, noise) for rule, noise in RULES.items()}
        engines["no fallback"] = decoder(target, heads, policy, tree, None)
        report["speed"] = run_speed_bench(target, engines, bench_prompts(args.prompts), args.max_new_tokens,
                                          progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        lines += ["GSM8K and MT-Bench first turns:", "", report_markdown(report["speed"], command)]
    write_json(args.out, report)
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
