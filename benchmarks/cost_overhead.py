"""Should cost-aware pruning count a fixed cost per step? What it would change, modeled on real drafted trees.

The cost model (taps_engine/economics.py) picks the n nodes maximizing (1 + their acceptance probabilities) /
(drafting + c(n + 1)), c being the verify cost curve measured in process. A step also pays costs that do not grow
with n: acceptance and bookkeeping in process, and through the service a round trip to the verifier (6.7-15.1 ms
per token beyond compute, results/serving/README.md). Counting such a fixed cost O makes more nodes worth it.

This decodes GSM8K prompts with the math drafter and MT-Bench prompts with the chat drafter (the shipped default
pair, policy `single`, greedy) on a fixed tree, so every step's tree is drafted unpruned; fits one calibration on
all the verified nodes, as a router's requests teach it; then, for each O, prunes every step's tree both ways and
reports the nodes kept and the modeled speed of counting O over ignoring it, both judged with O counted (the
step's true cost). It also reports the fixed cost measured in process: a step's time minus drafting and c(n + 1).

Writes JSON and Markdown (command, machine) atomically.

Usage: python benchmarks/cost_overhead.py --prompts 5 --max-new-tokens 128 --out results/engine/cost_overhead.json
"""

from __future__ import annotations

import shlex
import statistics
import sys

import torch

OVERHEADS_MS = (0.0, 2.5, 5.0, 10.0, 15.0, 20.0)
DRAFTER = {"gsm8k": "math", "mt_bench": "chat"}


def modeled(costs, steps: list, overhead_ms: float) -> dict:
    """Pruning each step's drafted tree ignoring and counting a fixed `overhead_ms`, judged with it counted."""
    from taps_engine.economics import best_size

    kept_ignoring, kept_counting, speed = [], [], []
    for step in steps:
        if not step.tree_size:
            continue
        ranked = torch.tensor(sorted(step.node_confidence, reverse=True))
        draft_ms = 1e3 * step.draft_s
        true = costs.rates(ranked, draft_ms + overhead_ms)
        n_ignoring, n_counting = best_size(costs.rates(ranked, draft_ms)), best_size(true)
        kept_ignoring.append(n_ignoring)
        kept_counting.append(n_counting)
        speed.append(float(true[n_counting] / true[n_ignoring]))
    return {"overhead_ms": overhead_ms, "steps": len(speed),
            "nodes_ignoring": round(statistics.mean(kept_ignoring), 2),
            "nodes_counting": round(statistics.mean(kept_counting), 2),
            "speed_ratio_mean": round(statistics.mean(speed), 4), "speed_ratio_max": round(max(speed), 4)}


def markdown(report: dict, command: str) -> list[str]:
    from taps_engine.costs import machine_line

    fixed = report["in_process_fixed_ms"]
    lines = [f"Command: `{command}`", "", f"Machine: {machine_line(report['machine'])}.", "",
             f"{report['steps']} steps of {report['prompts']} prompts drafted on the fixed tree {report['tree']} "
             f"(mean τ {report['tau']}); verify cost curve (ms): {report['verify_ms']}.", "",
             f"Fixed cost per step in process (step time minus drafting minus c(n + 1)): median "
             f"{fixed['median']} ms, mean {fixed['mean']} ms.", "",
             "| fixed cost O, ms | nodes verified, O ignored | nodes verified, O counted | modeled speed, counting "
             "O / ignoring it: mean over steps | max |", "|---|---|---|---|---|"]
    for row in report["rows"]:
        lines.append(f"| {row['overhead_ms']} | {row['nodes_ignoring']} | {row['nodes_counting']} | "
                     f"{row['speed_ratio_mean']} | {row['speed_ratio_max']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from taps_engine.bench_cli import parse_prompt_bench, prompt_bench_parser

    args = parse_prompt_bench(prompt_bench_parser(__doc__, 5, 128, "results/engine/cost_overhead.json"), argv)
    from dataclasses import replace

    from taps_engine import Decoder
    from taps_engine.costs import machine, verify_costs
    from taps_engine.drafter_specs import default_drafters
    from taps_engine.economics import CostModel
    from taps_engine.fileio import write_json, write_report
    from taps_engine.head import load_head
    from taps_engine.speed import bench_prompts
    from taps_engine.target import DEFAULT_TARGET, load_target
    from taps_engine.tree import speed_tree

    target = load_target(DEFAULT_TARGET)
    heads = {name: load_head(path, target.model) for name, path in default_drafters(DEFAULT_TARGET).items()}
    tree = replace(speed_tree(target.device), cost_aware=False)
    decoder = Decoder(target, heads, "single", tree)
    curve = verify_costs(target)
    costs = CostModel(curve)
    steps, taus = [], []
    prompts = bench_prompts(args.prompts)
    for i, (benchmark, prompt) in enumerate(prompts):
        print(f"[{i + 1}/{len(prompts)}] {benchmark}", file=sys.stderr, flush=True)
        result = decoder.generate([{"role": "user", "content": prompt}], max_new_tokens=args.max_new_tokens,
                                  drafter=DRAFTER[benchmark])
        steps += result.steps
        taus.append(result.tau)
    for step in steps:
        costs.calibration.update(torch.tensor(step.node_confidence), torch.tensor(step.node_accepted))
    fixed = [1e3 * (s.seconds - s.draft_s) - float(costs.cost[s.tree_size]) for s in steps]
    report = {"machine": machine(), "tree": tree.label,
              "prompts": len(prompts), "steps": len(steps), "tau": round(statistics.mean(taus), 3),
              "verify_ms": curve,
              "in_process_fixed_ms": {"median": round(statistics.median(fixed), 2),
                                      "mean": round(statistics.mean(fixed), 2)},
              "rows": [modeled(costs, steps, o) for o in OVERHEADS_MS]}
    write_json(args.out, report)
    write_report(args.out.with_suffix(".md"),
                 markdown(report, shlex.join(["python", "benchmarks/cost_overhead.py", *sys.argv[1:]])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
