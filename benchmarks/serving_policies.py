"""Which policy should the service route with by default? Policies side by side through one running service.

Starts the system of a serving config (default `configs/serve/local.yaml`, the one `taps serve` uses on one machine)
on a local Ray once, then on the same prompts (GSM8K and MT-Bench first turns, greedy):

1. one client, each prompt under every policy in turn (the order alternating per prompt, so machine noise is
   shared): tokens/s, τ, the drafter each request kept, the per-token time ratio to the first policy with a 95%
   bootstrap interval over prompts, and whether the outputs are token-identical (they must be: every policy
   decodes greedily and losslessly);
2. `--clients` concurrent clients per policy (threads, each sending every prompt): total tokens/s and latency.

Every request carries a conversation id of its own, so each one explores (sticky's prompt scoring, probe's
probing steps) as a new conversation's first turn does; a cached assignment would skip that for both.

Writes JSON and a Markdown table (command, machine, versions) atomically to --out (and the same path with .md).

With `plain` first (`--policies plain,sticky,probe`) the ratios say what speculation buys through the service: plain
decodes through the same router, verifier and transport, drafting nothing.

Usage: python benchmarks/serving_policies.py --prompts 4 --max-new-tokens 64 --policies sticky,probe
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from serving_overhead import client_load, latency_summary, machine, shareable, versions

DEFAULT_CONFIG = Path("configs/serve/local.yaml")
DEFAULT_OUT = Path("results/serving/policies.json")


def fail(message: str) -> None:
    print(f"serving_policies: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from taps_engine.policies import POLICIES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="serving config (YAML) to start")
    p.add_argument("--drafter", action="append", default=[], metavar="NAME=PATH",
                   help="serve this head as the config's drafter NAME instead of the config's (repeatable)")
    p.add_argument("--policies", default="sticky,probe",
                   help=f"comma-separated policies, the first being the baseline of the ratios; any of "
                        f"{', '.join(POLICIES)}")
    p.add_argument("--fallback", action=argparse.BooleanOptionalAction, default=None,
                   help="override the config's fallback (plain steps while a request's speculation loses)")
    p.add_argument("--tree", default=None, metavar="TOTAL/DEPTH/TOPK[+cost]",
                   help="override the config's tree (`+cost`: pruned per step by the verifier's cost curve)")
    p.add_argument("--colocated", action="store_true",
                   help="run every drafter inside the verifier's replica (one round trip per step)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per benchmark (GSM8K and MT-Bench)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--clients", type=int, default=8, help="concurrent clients of part 2 (0 skips it)")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs the local Ray may use (default: all)")
    p.add_argument("--timeout", type=float, default=600.0, help="deadline of one gRPC call, seconds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output; the Markdown goes next to it")
    args = p.parse_args(argv)
    args.policies = [x.strip() for x in args.policies.split(",") if x.strip()]
    unknown = [x for x in args.policies if x not in POLICIES]
    if unknown or len(args.policies) < 2 or len(set(args.policies)) != len(args.policies):
        p.error(f"--policies needs two or more distinct policies of {', '.join(POLICIES)}, got "
                f"{args.policies}")
    if args.prompts < 1 or args.max_new_tokens < 1 or args.clients < 0:
        p.error("--prompts and --max-new-tokens must be positive, --clients not negative")
    if args.out.suffix != ".json":
        p.error(f"--out must end in .json (the Markdown is written next to it), got {args.out}")
    return args


def load_config(args: argparse.Namespace):
    """The serving config with the heads of `--drafter`, `--tree`, `--fallback` and `--colocated` applied (each drafter
    validated again: one served elsewhere cannot be co-located), and a free gRPC port, so a running `taps serve` is
    left alone."""
    from services.app import free_port
    from services.config import DrafterConfig, load_serve_config, use_heads
    from taps_engine.configfile import validate
    from taps_engine.drafter_specs import parse_drafter_specs
    from taps_engine.tree import TreeSettings

    try:
        config = use_heads(load_serve_config(args.config),
                           {name: head.resolve() for name, head in parse_drafter_specs(args.drafter).items()})
        if args.colocated:
            config.drafters = {name: validate(DrafterConfig, {**d.model_dump(), "colocated": True},
                                              f"--colocated: drafter {name!r}")
                               for name, d in config.drafters.items()}
        if args.tree is not None:
            config.tree = TreeSettings.parse(args.tree)
    except (OSError, ValueError) as e:
        fail(str(e))
    if args.fallback is not None:
        config.fallback = args.fallback
    config.router.grpc_port = free_port()
    return config


def request_row(response, seconds: float) -> dict:
    stats = response.stats
    return {"tokens": len(response.token_ids), "seconds": round(seconds, 4), "steps": stats.n_steps,
            "tau": round(stats.mean_acceptance_length, 3), "drafter": response.decision.drafter,
            "selections": dict(stats.drafter_selections), "token_ids": list(response.token_ids)}


def one_client(address: str, prompts: list[tuple[str, str]], args: argparse.Namespace) -> list[dict]:
    """Every prompt under every policy, the order reversed on every other prompt."""
    from services.client import TapsClient, TapsError

    rows = []
    with TapsClient(address, timeout_s=args.timeout) as client:
        client.generate(prompts[0][1], max_new_tokens=8, temperature=0.0)  # warm the replicas
        for i, (benchmark, prompt) in enumerate(prompts):
            order = args.policies if i % 2 == 0 else args.policies[::-1]
            row = {"prompt": i, "benchmark": benchmark}
            for policy in order:
                start = time.perf_counter()
                try:
                    response = client.generate(prompt, policy=policy, max_new_tokens=args.max_new_tokens,
                                               temperature=0.0, conversation_id=uuid.uuid4().hex)
                except TapsError as e:
                    fail(f"the service refused prompt {i} under {policy}: {e}")
                row[policy] = request_row(response, time.perf_counter() - start)
            row["identical"] = len({tuple(row[p]["token_ids"]) for p in args.policies}) == 1
            rows.append(row)
            print(f"  prompt {i + 1}/{len(prompts)} ({benchmark}): " + ", ".join(
                f"{p} {row[p]['seconds']:.2f}s τ {row[p]['tau']} [{row[p]['drafter'] or '-'}]" for p in order),
                file=sys.stderr)
    return rows


def pooled_tau(new_tokens: int, requests: int, steps: int) -> float | None:
    """τ over many requests: each request's first token comes from the prefill, which τ leaves out."""
    return round((new_tokens - requests) / steps, 3) if steps else None


def summary(rows: list[dict], policies: list[str]) -> dict:
    """Per policy: tokens/s, τ (tokens over verify steps), drafters kept per benchmark, time ratio to the first."""
    from taps_engine.evaluation.intervals import ratio_interval

    base = policies[0]
    out = {}
    for policy in policies:
        mine = [r[policy] for r in rows]
        tokens, seconds, steps = (sum(x[k] for x in mine) for k in ("tokens", "seconds", "steps"))
        kept = Counter(f"{r['benchmark']}: {r[policy]['drafter'] or 'none'}" for r in rows)
        entry = {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
                 "tau": pooled_tau(tokens, len(rows), steps), "drafters_kept": dict(sorted(kept.items()))}
        if policy != base:
            # per-token time relative to the baseline; equal tokens when the outputs are identical
            entry["time_ratio_to_" + base] = round((seconds / tokens) / (
                sum(r[base]["seconds"] for r in rows) / sum(r[base]["tokens"] for r in rows)), 3)
            if all(r["identical"] for r in rows):
                interval = ratio_interval([r[policy]["seconds"] for r in rows], [r[base]["seconds"] for r in rows])
                entry["time_ratio_interval"] = [round(x, 3) for x in interval] if interval else None
        out[policy] = entry
    return out


def concurrent(address: str, prompts: list[str], policy: str, args: argparse.Namespace) -> dict:
    """args.clients clients at once under one policy, each request a new conversation."""
    load = client_load(address, prompts, args.clients, args.timeout, lambda: dict(
        policy=policy, max_new_tokens=args.max_new_tokens, temperature=0.0, conversation_id=uuid.uuid4().hex))
    summary = latency_summary(load)
    steps = sum(r.stats.n_steps for r in load["responses"])
    return {"policy": policy, "clients": args.clients, **summary,
            "tau": pooled_tau(summary["new_tokens"], summary["requests"], steps)}


def markdown(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    base = s["policies"][0]
    lines = [
        "# Serving policies side by side", "", f"Command: `{report['command']}`", "",
        f"Machine: {m['cpu']} ({m['cpu_count']} CPUs), native bf16 (AMX / AVX512-BF16): "
        f"{m.get('bf16_flags') or 'no'}; load average at end {m['load_average_at_end']}.",
        "Versions: " + ", ".join(f"{k} {x}" for k, x in report["versions"].items()) + ".", "",
        f"Config `{s['config']}`: target {s['target']} ({s['dtype']}), drafters {s['drafters']}, tree {s['tree']}, "
        f"transport `{s['transport']}`, fallback {'on' if s['fallback'] else 'off'}"
        f"{', drafters co-located in the verifier replica' if s.get('colocated') else ''}; {s['n_prompts']} prompts "
        f"(GSM8K / MT-Bench first turns), greedy, max {s['max_new_tokens']} new tokens; every request a new "
        "conversation.", "",
        "## One client, the policies in turn on each prompt", "",
        f"| policy | new tokens | seconds | tokens/s | τ | per-token time / {base} [95% CI over prompts] | "
        "drafter kept (prompts) |", "|---|---|---|---|---|---|---|"]
    for policy, e in report["one_client"]["summary"].items():
        ratio = e.get("time_ratio_to_" + base)
        interval = e.get("time_ratio_interval")
        ratio_text = "1 (baseline)" if ratio is None else f"{ratio}" + (
            f" [{interval[0]}, {interval[1]}]" if interval else "")
        kept = "; ".join(f"{k} {n}" for k, n in e["drafters_kept"].items())
        lines.append(f"| {policy} | {e['tokens']} | {e['seconds']} | {e['tokens_per_s']} | {e['tau']} | "
                     f"{ratio_text} | {kept} |")
    rows = report["one_client"]["per_prompt"]
    lines += ["", f"Token-identical outputs across the policies: **{sum(r['identical'] for r in rows)}/{len(rows)}**."]
    if report["concurrent"]:
        lines += ["", f"## {s['clients']} concurrent clients (each sends every prompt), one policy at a time", "",
                  "| policy | requests | failed | new tokens | wall s | total tokens/s | τ | mean latency s | p50 s | "
                  "max s |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['policy']} | {r['requests']} | {r['failed']} | {r['new_tokens']} | {r['wall_s']} | "
                  f"{r['total_tokens_per_s']} | {r['tau']} | {r['mean_latency_s']} | {r['p50_latency_s']} | "
                  f"{r['max_latency_s']} |" for r in report["concurrent"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/serving_policies.py",
                                                *(sys.argv[1:] if argv is None else argv)])
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING)

    from services.app import run_local, shutdown_local
    from services.client import TapsClient
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.settings import default_device, resolve_dtype
    from taps_engine.speed import bench_prompts

    config = load_config(args)
    prompts = bench_prompts(args.prompts)
    num_cpus = float(args.num_cpus if args.num_cpus is not None else os.cpu_count() or 1)
    print(f"starting Ray Serve on {num_cpus:g} CPUs (gRPC port {config.router.grpc_port})", file=sys.stderr)
    try:
        address = run_local(config, num_cpus=num_cpus, temp_dir=tempfile.mkdtemp(prefix="taps-ray-"))
    except (ValueError, RuntimeError, OSError) as e:
        fail(f"the serving system did not start: {e}")
    try:
        with TapsClient(address, timeout_s=args.timeout) as client:
            if client.health() != "SERVING":
                fail(f"the service at {address} is not serving")
        print("one client, the policies in turn", file=sys.stderr)
        rows = one_client(address, prompts, args)
        crowd = []
        for policy in args.policies if args.clients else ():
            print(f"{args.clients} concurrent clients, {policy}", file=sys.stderr)
            crowd.append(concurrent(address, [p for _, p in prompts], policy, args))
    finally:
        shutdown_local()

    for row in rows:
        for policy in args.policies:
            del row[policy]["token_ids"]
    report = {"command": command, "machine": machine(), "versions": versions(),
              "settings": {"config": shareable(args.config), "target": config.target,
                           "dtype": str(resolve_dtype(config.compute_dtype, default_device())).removeprefix("torch."),
                           "drafters": {k: shareable(d.path) if d.path else None for k, d in config.drafters.items()},
                           "colocated": args.colocated,
                           "tree": asdict(config.tree) if config.tree else "the device's default",
                           "transport": config.router.transport,
                           "fallback": config.fallback,
                           "policies": args.policies, "n_prompts": len(prompts), "clients": args.clients,
                           "max_new_tokens": args.max_new_tokens, "temperature": 0.0},
              "one_client": {"summary": summary(rows, args.policies), "per_prompt": rows}, "concurrent": crowd}
    write_json(args.out, report)
    md, text = args.out.with_suffix(".md"), markdown(report)
    atomic_write(md, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.out} and {md}", file=sys.stderr)
    print(text)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
