"""Which tree size should cost-aware pruning pick when modeled rates tie? Measured side by side.

Cost-aware pruning (taps_engine/economics.py) verifies the n ranked nodes that maximize the modeled tokens per
second. Near its peak the modeled rate is flat (results/engine/cost_overhead.md), so small errors of the model
(the calibration, the cost curve's noise) decide between a short and a longer tree; `best_size` therefore takes
the largest n whose rate is within a tolerance of the best. This decodes the same prompts with one decoder per
tolerance (`make run`'s drafters, policy and tree; greedy), interleaved per prompt with the engine's plain loop
and transformers generate, so each tolerance's speed-up and τ are measured on the same machine state.

Prompts: GSM8K and MT-Bench first turns, and `make run`'s two prompts (group "demo"). `--verify-ms` prunes with
another machine's cost curve (its drafting and verification still run here).
Writes JSON and Markdown (command, machine, verify cost curve) atomically.

Usage: python benchmarks/rate_tolerance.py --prompts 6 --tolerance 0 --tolerance 0.02 --tolerance 0.05 \
    --out results/engine/rate_tolerance.json
"""

from __future__ import annotations

import json
import shlex
import sys


def comparisons(report: dict, prompts: list[tuple[str, str]]) -> list[dict]:
    """Each engine against the first (the first --tolerance given; 0 by default) on the same prompts, per group:
    the speed ratio and the τ difference, with paired 95% intervals over prompts."""
    from taps_engine.evaluation.intervals import paired_difference, paired_ratio
    from taps_engine.speed import prompt_groups

    names = list(report["engines"])
    groups = prompt_groups(prompts)

    def records(name: str, keep: list[int]) -> list[dict]:
        runs = report["per_prompt"][name]
        return [{"benchmark": prompts[i][0], "item": str(i), "committed": runs["committed"][i],
                 "n_steps": runs["steps"][i]} for i in keep]

    def rate(name: str, keep: list[int]) -> tuple[list[float], list[float]]:
        runs = report["per_prompt"][name]
        return [runs["new_tokens"][i] for i in keep], [runs["seconds"][i] for i in keep]

    base = names[0]
    return [{"engine": name, "against": base, "group": group, "speed": paired_ratio(rate(base, keep), rate(name, keep)),
             "tau": paired_difference(records(base, keep), records(name, keep))}
            for name in names[1:] for group, keep in groups.items()]


def comparison_lines(rows: list[dict]) -> list[str]:
    def cell(value: float, ci: list[float] | None) -> str:
        return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    lines = ["Against the first engine on the same prompts (paired 95% bootstrap intervals over prompts):", "",
             "| engine | prompts | tokens/s ratio | τ difference |", "|---|---|---|---|"]
    for r in rows:
        speed, tau = r["speed"], r["tau"]
        if speed is None or tau is None:
            continue
        lines.append(f"| {r['engine']} | {r['group']} ({speed['n_prompts']}) | {cell(speed['ratio'], speed['ci'])} | "
                     f"{cell(tau['difference'], tau['ci'])} |")
    return lines


def cost_curve(text: str) -> dict[int, float]:
    """`--verify-ms`: a JSON object of tokens verified -> milliseconds, at least two sizes, all positive."""
    try:
        curve = {int(n): float(ms) for n, ms in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"--verify-ms must be a JSON object of tokens -> ms, got {text!r}") from None
    if len(curve) < 2 or min(curve) < 1 or min(curve.values()) <= 0:
        raise ValueError(f"--verify-ms needs two or more sizes >= 1 with positive ms, got {text!r}")
    return curve


def main(argv: list[str] | None = None) -> int:
    from taps_engine.bench_cli import parse_prompt_bench, prompt_bench_parser

    p = prompt_bench_parser(__doc__, 6, 96, "results/engine/rate_tolerance.json", "96: what `make run` generates")
    p.add_argument("--tolerance", type=float, action="append", help="repeatable; default 0 and the engine's")
    p.add_argument("--dtype", default="auto", help="auto, bf16 or fp32")
    p.add_argument("--verify-ms", help="prune with this cost curve (JSON, tokens -> ms; e.g. another machine's) "
                                       "instead of this machine's cached one")
    args = parse_prompt_bench(p, argv)
    from taps_engine import Decoder
    from taps_engine.cli import DEMO_PROMPTS
    from taps_engine.costs import machine_line, verify_costs
    from taps_engine.drafter_specs import default_drafters
    from taps_engine.economics import RATE_TOLERANCE, CostModel
    from taps_engine.fileio import write_json, write_report
    from taps_engine.head import load_head
    from taps_engine.policies import DEFAULT_ROUTING
    from taps_engine.speed import bench_prompts, report_markdown, run_speed_bench
    from taps_engine.target import DEFAULT_TARGET, load_target
    from taps_engine.tree import speed_tree

    tolerances = args.tolerance or [0.0, RATE_TOLERANCE]
    if any(not 0 <= t < 1 for t in tolerances):
        p.error("a tolerance must lie in [0, 1)")
    try:
        given = cost_curve(args.verify_ms) if args.verify_ms is not None else None
    except ValueError as e:
        p.error(str(e))
    try:
        target = load_target(DEFAULT_TARGET, dtype=args.dtype)
    except ValueError as e:
        p.error(str(e))
    heads = {name: load_head(path, target.model) for name, path in default_drafters(DEFAULT_TARGET).items()}
    tree, curve = speed_tree(target.device), given or verify_costs(target)
    engines = {f"{DEFAULT_ROUTING} {tree.label} tolerance {t}":
               Decoder(target, heads, DEFAULT_ROUTING, tree, fallback=True, costs=CostModel(curve, tolerance=t))
               for t in tolerances}
    prompts = bench_prompts(args.prompts) + [("demo", prompt) for prompt in DEMO_PROMPTS.values()]
    report = run_speed_bench(target, engines, prompts, args.max_new_tokens,
                             progress=lambda s: print(s, file=sys.stderr, flush=True))
    report["cached_verify_ms"] = curve
    report["comparisons"] = comparisons(report, prompts)
    command = shlex.join(["python", "benchmarks/rate_tolerance.py", *(argv if argv is not None else sys.argv[1:])])
    write_json(args.out, report)
    write_report(args.out.with_suffix(".md"), [
        report_markdown(report, command), *comparison_lines(report["comparisons"]), "",
        f"Machine: {machine_line(report['machine'])}. The engines pruned with {'the given' if given else 'the cached'} "
        f"curve (ms): {curve}; the table above measures this machine's after the run."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
