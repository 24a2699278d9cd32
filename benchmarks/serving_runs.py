"""Repeated runs of `serving_policies.py` summarized: one policy against another across runs, with an interval over
runs (each run's own interval covers its prompts, not the run-to-run noise of a shared machine).

Per run: the one-client ratio of per-token times (candidate over baseline, summed seconds; inverted when the file
ran the candidate first), the same per benchmark, τ, and the concurrent part's tokens/s both ways. Over the runs:
the geometric mean of each ratio and its 95% t-interval on the log scale.

Usage: python benchmarks/serving_runs.py results/serving/policies-a.json results/serving/policies-b.json ...
           --baseline plain --candidate probe --out results/serving/runs.md
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from pathlib import Path


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"serving_runs: error: cannot read {path}: {e}")


def run_row(path: Path, report: dict, baseline: str, candidate: str) -> dict:
    """One file's ratios of `candidate` to `baseline`."""
    rows = report["one_client"]["per_prompt"]
    missing = [p for p in (baseline, candidate) if p not in rows[0]]
    if missing:
        raise SystemExit(f"serving_runs: error: {path} has no policy {', '.join(missing)}")

    def time_ratio(subset: list[dict]) -> float:
        return sum(r[candidate]["seconds"] for r in subset) / sum(r[baseline]["seconds"] for r in subset)

    concurrent = {c["policy"]: c for c in report["concurrent"]}
    row = {"file": path.name, "tau": report["one_client"]["summary"][candidate]["tau"],
           "time_ratio": time_ratio(rows),
           "by_benchmark": {b: time_ratio([r for r in rows if r["benchmark"] == b])
                            for b in dict.fromkeys(r["benchmark"] for r in rows)}}
    if baseline in concurrent and candidate in concurrent:
        row["clients"] = concurrent[candidate]["clients"]
        row["tokens_per_s"] = (concurrent[baseline]["total_tokens_per_s"], concurrent[candidate]["total_tokens_per_s"])
        row["throughput_ratio"] = row["tokens_per_s"][1] / row["tokens_per_s"][0]
    return row


def geometric_interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean and its 95% t-interval over runs."""
    from scipy.stats import t

    logs = [math.log(r) for r in ratios]
    mean = statistics.mean(logs)
    half = t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def markdown(rows: list[dict], baseline: str, candidate: str, command: str) -> list[str]:
    benchmarks = list(rows[0]["by_benchmark"])
    lines = [f"Command: `{command}`", "", f"{candidate} against {baseline}, {len(rows)} runs:", "",
             "| file | τ | one client: time per token ratio | " + " | ".join(benchmarks)
             + f" | concurrent: tokens/s {baseline}, {candidate} (ratio) |",
             "|---|---|---|" + "---|" * len(benchmarks) + "---|"]
    for r in rows:
        load_cell = (f"{r['clients']} clients: {r['tokens_per_s'][0]}, {r['tokens_per_s'][1]} "
                     f"({r['throughput_ratio']:.3f}x)" if "clients" in r else "")
        lines.append(f"| `{r['file']}` | {r['tau']} | {r['time_ratio']:.3f} | "
                     + " | ".join(f"{r['by_benchmark'][b]:.3f}" for b in benchmarks) + f" | {load_cell} |")
    mean, low, high = geometric_interval([r["time_ratio"] for r in rows])
    lines += ["", f"One client, {candidate}'s time per token over {baseline}'s: geometric mean {mean:.3f}, 95% "
                  f"t-interval over the {len(rows)} runs [{low:.3f}, {high:.3f}]."]
    for clients in sorted({r["clients"] for r in rows if "clients" in r}):
        ratios = [r["throughput_ratio"] for r in rows if r.get("clients") == clients]
        if len(ratios) > 1:
            mean, low, high = geometric_interval(ratios)
            lines.append(f"{clients} clients, {candidate}'s tokens/s over {baseline}'s: geometric mean {mean:.3f}, "
                         f"95% t-interval over the {len(ratios)} runs [{low:.3f}, {high:.3f}].")
        else:
            lines.append(f"{clients} clients: one run, {ratios[0]:.3f}x (no interval).")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path, help="serving_policies.py JSON reports")
    p.add_argument("--baseline", default="plain")
    p.add_argument("--candidate", default="probe")
    p.add_argument("--out", type=Path, required=True, help="Markdown output")
    args = p.parse_args(argv)
    if len(args.files) < 2:
        p.error("give two or more runs: the interval is over runs")
    if args.out.suffix != ".md":
        p.error("--out must end in .md")
    from taps_engine.fileio import write_report

    rows = [run_row(path, load(path), args.baseline, args.candidate) for path in args.files]
    write_report(args.out, markdown(rows, args.baseline, args.candidate,
                                    shlex.join(["python", "benchmarks/serving_runs.py", *sys.argv[1:]])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
