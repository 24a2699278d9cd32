"""What the serving system costs over the in-process engine, and how it scales with concurrent clients.

Starts the whole system on a local Ray (services/app.py's `run_local`: one application per drafter, or with
`--colocated` the drafters inside the verifier's replica; the verifier; the router) from a serving config built here, then on the same prompts (MT-Bench and GSM8K first turns,
greedy, fixed max_new_tokens):

1. the in-process engine `Decoder` (same target, same heads, same tree) and the service's unary Generate with one
   client, interleaved per prompt so machine noise is shared: tokens/s of each, the per-token time ratio
   service / in-process, and whether the outputs are token-identical (they must be: both decode greedily);
2. the service with 1, 2, 4 and 8 concurrent clients (threads, each sending every prompt): total tokens/s, mean
   latency per request, and the verifier's mean batch (steps per target forward; `--max-batch-size 1` turns
   batching off for the comparison).

Writes JSON and a Markdown table (command, machine, versions) atomically to --out (and the same path with .md).

Usage: nice -n 19 python benchmarks/serving_overhead.py --prompts 4 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
import warnings
import zlib
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

from taps_engine.drafter_specs import default_drafters, parse_drafter_specs
from taps_engine.policies import POLICIES
from taps_engine.target import DEFAULT_TARGET
from taps_engine.tree import CPU_TREE

DEFAULT_OUT = Path("results/serving/overhead.json")
TREE = asdict(CPU_TREE)
CONCURRENCY = (1, 2, 4, 8)


def shareable(path: Path) -> str:
    """A path as a report shows it: relative inside the checkout, `~` for the home directory, never this machine's."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(Path.cwd()):
        return str(resolved.relative_to(Path.cwd()))
    return str(path).replace(str(Path.home()), "~")


def fail(message: str) -> None:
    print(f"serving_overhead: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--target", default=DEFAULT_TARGET, help="target spec (alias, directory, Hub id, .gguf)")
    p.add_argument("--dtype", default="auto", help="target dtype, for the service and the in-process engine")
    p.add_argument("--drafter", action="append", default=[], metavar="NAME=PATH",
                   help="a drafter head (repeatable); PATH 'random' serves a random head. Default: the math and chat "
                        "drafters shipped for the target, else random heads")
    p.add_argument("--policy", default="single", choices=POLICIES,
                   help="composition policy")
    p.add_argument("--transport", default="handle", choices=("handle", "grpc"),
                   help="how the router reaches drafters and the verifier (router.transport)")
    p.add_argument("--colocated", action="store_true",
                   help="drafters in the verifier's replica (colocated: true): one round trip per step")
    p.add_argument("--prompts", type=int, default=8, help="number of prompts (MT-Bench / GSM8K alternating)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                   help="comma-separated numbers of concurrent clients for the throughput part")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="max_batch_size of the verifier and drafters: concurrent sessions per forward (1 = off)")
    p.add_argument("--replica-threads", type=int, default=None,
                   help="torch threads of the verifier and drafter replicas (default: the in-process engine's)")
    p.add_argument("--engine-threads", type=int, default=None,
                   help="torch threads of the in-process engine (default: torch's, usually every core); equal to "
                        "--replica-threads, the comparison leaves out how many cores each side may use")
    p.add_argument("--num-cpus", type=float, default=None,
                   help="CPUs the local Ray may use (default: this machine's count)")
    p.add_argument("--timeout", type=float, default=600.0, help="deadline of one gRPC call, seconds")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output; the Markdown goes next to it (.md)")
    p.add_argument("--markdown-from", type=Path, default=None, metavar="JSON",
                   help="only write the Markdown of a report this script wrote before (next to it)")
    args = p.parse_args(argv)
    if args.prompts < 1:
        p.error("--prompts must be at least 1")
    if args.max_new_tokens < 1:
        p.error("--max-new-tokens must be at least 1")
    try:
        args.concurrency = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    except ValueError:
        p.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not args.concurrency or min(args.concurrency) < 1:
        p.error("--concurrency needs positive integers")
    if args.replica_threads is not None and args.replica_threads < 1:
        p.error("--replica-threads must be at least 1")
    if args.engine_threads is not None and args.engine_threads < 1:
        p.error("--engine-threads must be at least 1")
    if args.max_batch_size < 1:
        p.error("--max-batch-size must be at least 1")
    if args.out.suffix != ".json":
        p.error(f"--out must end in .json (the Markdown is written next to it), got {args.out}")
    return args


def drafter_paths(specs: list[str], target: str) -> dict[str, Path | None]:
    """NAME=PATH options (PATH `random`: an untrained head), else the target's trained heads, else random ones."""
    if not specs:
        found = default_drafters(target)
        return {name: found.get(name) for name in ("math", "chat")}
    try:
        return parse_drafter_specs(specs, allow_random=True)
    except ValueError as e:
        fail(str(e))


def serving_config(args: argparse.Namespace, drafters: dict[str, Path | None], num_cpus: float):
    from services.app import free_port
    from services.config import ServeConfig

    n_replicas = (0 if args.colocated else len(drafters)) + 2  # drafters, verifier, router: one replica each
    # fractional CPUs: Ray only does bookkeeping with them; half the machine keeps room for the driver's threads
    per_replica = round(min(1.0, num_cpus / 2 / n_replicas), 3)
    # every replica takes all clients' calls at once (Ray Serve's default would queue beyond 5)
    ongoing = max(max(args.concurrency), args.max_batch_size)
    deployment = {"num_replicas": 1, "max_ongoing_requests": ongoing, "ray_actor_options": {"num_cpus": per_replica}}
    try:
        return ServeConfig.model_validate({
            "target": args.target, "dtype": args.dtype, "tree": TREE,
            "fallback": False,   # every step drafts, as in the in-process engine: the same steps on both sides
            "drafters": {name: {"path": str(path) if path is not None else None, "deployment": deployment,
                                "max_batch_size": args.max_batch_size, "torch_threads": args.replica_threads,
                                "colocated": args.colocated}
                         for name, path in drafters.items()},
            "verifier": {"deployment": deployment, "max_batch_size": args.max_batch_size,
                         "torch_threads": args.replica_threads, "session_cache_size": max(32, args.max_batch_size)},
            "router": {"grpc_port": free_port(), "max_new_tokens_cap": max(1024, args.max_new_tokens),
                       "transport": args.transport, "deployment": deployment}})
    except ValueError as e:
        fail(f"bad serving config: {e}")


def load_engine(args: argparse.Namespace, drafters: dict[str, Path | None]):
    """The in-process Decoder with the heads the service's drafter replicas load (random ones seeded alike)."""
    from taps_engine import Decoder
    from taps_engine.head import DraftHead, load_head
    from taps_engine.target import load_target

    target = load_target(args.target, dtype=args.dtype)
    heads = {name: (load_head(path, target.model) if path is not None
                    else DraftHead.random(target.model, seed=zlib.crc32(name.encode()))).eval()
             for name, path in drafters.items()}
    return target, Decoder(target, heads, args.policy, CPU_TREE)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("taps", "torch", "transformers", "ray", "grpcio"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict:
    import torch

    from taps_engine.costs import cpu_model, isa_limits
    from taps_engine.settings import bf16_cpu_flags

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    flags = bf16_cpu_flags()
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(), "gpu": gpu,
            "native_bf16": bool(flags), "bf16_flags": flags, "isa_limits": isa_limits(),
            "torch_threads_in_process": torch.get_num_threads(), "load_average_at_end": load}


def engine_alone(engine, prompts: list[str], args: argparse.Namespace, drafter: str) -> dict:
    """The in-process engine on the prompts before Ray starts: on a small machine the idle Ray cluster (GCS,
    raylet, controller, proxy, replicas) takes CPU from the interleaved in-process runs too."""
    import torch

    messages = [[{"role": "user", "content": p}] for p in prompts]
    engine.generate(messages[0], max_new_tokens=8, drafter=drafter or None)
    tokens, seconds = 0, 0.0
    for msg in messages:
        with torch.inference_mode():
            start = time.perf_counter()
            result = engine.generate(msg, max_new_tokens=args.max_new_tokens, drafter=drafter or None)
            seconds += time.perf_counter() - start
        tokens += len(result.token_ids)
    return {"new_tokens": tokens, "seconds": round(seconds, 3), "ms_per_token": round(1e3 * seconds / tokens, 2)}


def interleaved(engine, client, prompts: list[str], args: argparse.Namespace, drafter: str) -> dict:
    """In-process engine and service, one prompt each in turn; outputs compared token for token."""
    import torch

    from services.client import TapsError

    fields = dict(policy=args.policy, drafter=drafter, max_new_tokens=args.max_new_tokens, temperature=0.0)
    messages = [[{"role": "user", "content": p}] for p in prompts]
    # warm-up: first calls load kernels, fill caches and open the service's sessions
    engine.generate(messages[0], max_new_tokens=8, drafter=drafter or None)
    client.generate(prompts[0], **{**fields, "max_new_tokens": 8})
    rows = []
    for i, (prompt, msg) in enumerate(zip(prompts, messages)):
        with torch.inference_mode():
            start = time.perf_counter()
            local = engine.generate(msg, max_new_tokens=args.max_new_tokens, drafter=drafter or None)
            local_s = time.perf_counter() - start
        compute_before = replica_compute_s(drafter, args.colocated)
        start = time.perf_counter()
        try:
            remote = client.generate(prompt, **fields)
        except TapsError as e:
            fail(f"the service refused prompt {i}: {e}")
        remote_s = time.perf_counter() - start
        compute = tuple(now - before for now, before in zip(replica_compute_s(drafter, args.colocated),
                                                            compute_before))
        rows.append({"prompt": i, "in_process_tokens": len(local.token_ids), "in_process_s": round(local_s, 4),
                     "in_process_tau": round(local.tau, 3),
                     "service_tokens": len(remote.token_ids), "service_s": round(remote_s, 4),
                     "service_server_s": round(remote.stats.seconds, 4),
                     "service_tau": round(remote.stats.mean_acceptance_length, 3),
                     "identical": list(local.token_ids) == list(remote.token_ids),
                     "in_process_parts": breakdown(local_s, local.seconds, sum(s.draft_s for s in local.steps),
                                                   sum(s.verify_s for s in local.steps)),
                     "service_parts": breakdown(remote_s, remote.stats.seconds, remote.stats.draft_seconds,
                                                remote.stats.verify_seconds, compute)})
        print(f"  prompt {i + 1}/{len(prompts)}: in-process {len(local.token_ids)} tok {local_s:.2f}s, "
              f"service {len(remote.token_ids)} tok {remote_s:.2f}s, identical={rows[-1]['identical']}",
              file=sys.stderr)
    local_tok = sum(r["in_process_tokens"] for r in rows)
    local_s = sum(r["in_process_s"] for r in rows)
    remote_tok = sum(r["service_tokens"] for r in rows)
    remote_s = sum(r["service_s"] for r in rows)
    server_s = sum(r["service_server_s"] for r in rows)
    per_tok_local = local_s / local_tok if local_tok else float("nan")
    per_tok_remote = remote_s / remote_tok if remote_tok else float("nan")
    return {"in_process": {"new_tokens": local_tok, "seconds": round(local_s, 3),
                           "tokens_per_s": round(local_tok / local_s, 2) if local_s else None,
                           "ms_per_token": round(1e3 * per_tok_local, 2)},
            "service": {"new_tokens": remote_tok, "seconds": round(remote_s, 3),
                        "tokens_per_s": round(remote_tok / remote_s, 2) if remote_s else None,
                        "ms_per_token": round(1e3 * per_tok_remote, 2),
                        "server_reported_seconds": round(server_s, 3)},
            "per_token_time_ratio_service_over_in_process": round(per_tok_remote / per_tok_local, 3),
            "ms_per_token_parts": {
                side: {key: round(1e3 * sum(r[f"{side}_parts"][key] for r in rows) / n, 2)
                       if key in rows[0][f"{side}_parts"] else None for _, key in BREAKDOWN}
                for side, n in (("in_process", local_tok), ("service", remote_tok))},
            "identical_outputs": sum(r["identical"] for r in rows), "n_prompts": len(rows), "per_prompt": rows}


def replica_info(drafter: str | None = None):
    """The Info answer (with its counters) of the verifier replica, or of drafter `drafter`'s replica."""
    from ray import serve

    from services.deployments import VERIFIER_APP, drafter_app_name
    from services.protos_gen.taps.v1 import taps_pb2 as pb

    if drafter is None:
        handle, answer = serve.get_deployment_handle("Verifier", VERIFIER_APP), pb.VerifierInfo
    else:
        handle, answer = serve.get_deployment_handle("Drafter", drafter_app_name(drafter)), pb.DrafterInfo
    return answer.FromString(handle.options(method_name="Info").remote(pb.InfoRequest().SerializeToString()).result())


def verifier_counters() -> tuple[int, int]:
    """(target forwards that verified steps, steps they held) of the verifier replica so far."""
    info = replica_info()
    return info.verify_forwards, info.verified_steps


def replica_compute_s(drafter: str, colocated: bool) -> tuple[float, float]:
    """(seconds drafter `drafter`'s replica has spent drafting, seconds the verifier's has spent verifying; a
    co-located drafter's drafting after each verification counts in the latter)."""
    own = drafter and not colocated
    return replica_info(drafter).draft_seconds if own else 0.0, replica_info().verify_seconds


BREAKDOWN = (("drafting", "draft_s"), ("of which: drafter replica's compute", "replica_draft_s"),
             ("verification", "verify_s"), ("of which: verifier replica's compute", "replica_verify_s"),
             ("rest of the generation (prefill, commits, text)", "rest_s"),
             ("outside the generation (gRPC proxy, client)", "outside_s"))


def breakdown(wall_s: float, generation_s: float, draft_s: float, verify_s: float,
              replica: tuple[float, float] | None = None) -> dict:
    """Where one request's time went, in seconds: the engine's draft and verify phases (through the service:
    the router's Propose and Verify round trips, and the replicas' compute inside them), the rest of the
    generation, and what lies outside it."""
    parts = {"draft_s": draft_s, "verify_s": verify_s, "rest_s": generation_s - draft_s - verify_s,
             "outside_s": wall_s - generation_s}
    if replica is not None:
        parts["replica_draft_s"], parts["replica_verify_s"] = replica
    return parts


def client_load(address: str, prompts: list[str], n_clients: int, timeout_s: float,
                request_fields: Callable[[], dict]) -> dict:
    """n_clients threads, each with its own channel, each sending every prompt (starting at a different one) with
    the fields `request_fields()` gives: the responses, their latencies, the errors and the wall time from the
    moment every client is connected."""
    from services.client import TapsClient, TapsError

    responses, latencies, errors = [], [], []
    lock = threading.Lock()
    barrier = threading.Barrier(n_clients + 1)

    def worker(k: int) -> None:
        with TapsClient(address, timeout_s=timeout_s) as client:
            client.health()  # connect before the clock starts
            barrier.wait()
            for j in range(len(prompts)):
                prompt = prompts[(j + k) % len(prompts)]
                start = time.perf_counter()
                try:
                    response = client.generate(prompt, **request_fields())
                except TapsError as e:
                    with lock:
                        errors.append(str(e))
                    continue
                with lock:
                    latencies.append(time.perf_counter() - start)
                    responses.append(response)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(n_clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        print(f"  {len(errors)} of {n_clients * len(prompts)} requests failed, first: {errors[0]}", file=sys.stderr)
    return {"responses": responses, "latencies": latencies, "errors": errors, "wall_s": wall}


def latency_summary(load: dict) -> dict:
    """What a client_load answer says about throughput and latency."""
    latencies, wall = load["latencies"], load["wall_s"]
    tokens = sum(len(r.token_ids) for r in load["responses"])
    return {"requests": len(latencies), "failed": len(load["errors"]), "new_tokens": tokens,
            "wall_s": round(wall, 3), "total_tokens_per_s": round(tokens / wall, 2) if wall else None,
            "mean_latency_s": round(statistics.fmean(latencies), 3) if latencies else None,
            "p50_latency_s": round(statistics.median(latencies), 3) if latencies else None,
            "max_latency_s": round(max(latencies), 3) if latencies else None}


def concurrent(address: str, prompts: list[str], args: argparse.Namespace, drafter: str, n_clients: int) -> dict:
    """The service's throughput with n_clients concurrent clients, and how many steps a verify forward held."""
    fields = dict(policy=args.policy, drafter=drafter, max_new_tokens=args.max_new_tokens, temperature=0.0)
    forwards, steps = verifier_counters()
    load = client_load(address, prompts, n_clients, args.timeout, lambda: fields)
    forwards, steps = (now - before for now, before in zip(verifier_counters(), (forwards, steps)))
    return {"clients": n_clients, **latency_summary(load),
            "first_error": load["errors"][0] if load["errors"] else None,
            "verify_forwards": forwards, "mean_verify_batch": round(steps / forwards, 2) if forwards else None}


def ratio_ci(overhead: dict) -> str:
    """The per-token ratio's 95% bootstrap interval over prompts, when both sides wrote the same tokens."""
    from taps_engine.evaluation.intervals import ratio_interval

    rows = overhead["per_prompt"]
    if not all(r["identical"] for r in rows):
        return ""
    interval = ratio_interval([r["service_s"] for r in rows], [r["in_process_s"] for r in rows])
    return f" (95% bootstrap interval over the {len(rows)} prompts: {interval[0]}-{interval[1]})" if interval else ""


def markdown(report: dict) -> str:
    s, o = report["settings"], report["overhead"]
    m, v = report["machine"], report["versions"]
    drafters = ", ".join(f"{k} ({p or 'random'})" for k, p in s["drafters"].items())
    lines = [
        "# Serving overhead: Ray Serve + gRPC vs the in-process engine", "",
        f"Command: `{report['command']}`", "",
        f"Machine: {m['cpu']} ({m['cpu_count']} CPUs{', ' + m['gpu'] if m['gpu'] else ''}), {m['platform']}; "
        f"native bf16 (AMX / AVX512-BF16): {m.get('bf16_flags', m.get('native_bf16'))}; instruction-set caps: "
        f"{m.get('isa_limits') or 'none'}; in-process torch threads {m['torch_threads_in_process']}; load average "
        f"at end {m['load_average_at_end']}.",
        "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) + ".", "",
        f"Target {s['target']} ({s['dtype']}), router transport `{s.get('transport', 'handle')}`"
        f"{', drafters co-located in the verifier replica' if s.get('colocated') else ''}, policy "
        f"`{s['policy']}`"
        f"{' with drafter ' + s['drafter_used'] if s['drafter_used'] else ''}; drafters {drafters}; tree {s['tree']}; "
        f"{s['n_prompts']} prompts (MT-Bench / GSM8K first turns), greedy, max {s['max_new_tokens']} new tokens; "
        f"{s['num_cpus_per_replica']} CPU per replica on a local Ray of {s['ray_num_cpus']} CPUs.", "",
        "## One client, interleaved per prompt with the in-process engine", "",
        "| path | new tokens | seconds | tokens/s | ms/token |", "|---|---|---|---|---|",
        f"| in-process `Decoder` | {o['in_process']['new_tokens']} | {o['in_process']['seconds']} | "
        f"{o['in_process']['tokens_per_s']} | {o['in_process']['ms_per_token']} |",
        f"| service (unary Generate, client wall time) | {o['service']['new_tokens']} | {o['service']['seconds']} | "
        f"{o['service']['tokens_per_s']} | {o['service']['ms_per_token']} |", "",
        f"Per-token time ratio service / in-process: **{o['per_token_time_ratio_service_over_in_process']}**"
        f"{ratio_ci(o)}. "
        f"Server-reported generation time (router): {o['service']['server_reported_seconds']} s of "
        f"{o['service']['seconds']} s client wall time. Token-identical outputs: "
        f"**{o['identical_outputs']}/{o['n_prompts']}**.", "",
        f"Before Ray started, the in-process engine took {o['in_process_without_ray']['ms_per_token']} ms per token "
        f"on the same prompts: the service takes "
        f"**{o['per_token_time_ratio_service_over_in_process_without_ray']}x** that (a Ray cluster idling beside it "
        "slows the interleaved in-process runs too).", "",
        "Where a token's time goes (ms per new token; through the service, drafting and verification are the "
        "router's round trips, and the replicas' compute is the time their batches ran"
        + ("; co-located drafters draft inside the Verify round trip, so the verifier replica's compute includes "
           "their drafting, and drafting through the service is the first step's Draft call" if s.get("colocated")
           else "") + "):", "",
        "| part | in-process | service |", "|---|---|---|",
        *(f"| {label} | " + " | ".join(str(o["ms_per_token_parts"][side][key] or "—")
                                       for side in ("in_process", "service")) + " |" for label, key in BREAKDOWN), "",
        "## Concurrent clients (each sends every prompt)", "",
        f"Batching: up to {s.get('max_batch_size', 1)} sessions per verifier and drafter forward; "
        f"{s.get('replica_threads')} torch threads per replica.", "",
        "| clients | requests | failed | new tokens | wall s | total tokens/s | x one client | mean latency s | "
        "p50 s | max s | steps per verify forward |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    one = next((r["total_tokens_per_s"] for r in report["concurrency"] if r["clients"] == 1), None)
    for r in report["concurrency"]:
        scale = round(r["total_tokens_per_s"] / one, 2) if one and r["total_tokens_per_s"] else ""
        lines.append(f"| {r['clients']} | {r['requests']} | {r['failed']} | {r['new_tokens']} | {r['wall_s']} | "
                     f"{r['total_tokens_per_s']} | {scale} | {r['mean_latency_s']} | {r['p50_latency_s']} | "
                     f"{r['max_latency_s']} | {r.get('mean_verify_batch')} |")
    return "\n".join(lines) + "\n"


def rewrite_markdown(path: Path) -> int:
    import json

    from taps_engine.fileio import atomic_write

    try:
        report = json.loads(path.read_text())
        text = markdown(report)
    except (OSError, ValueError, KeyError) as e:
        fail(f"{path} is not a report of this script: {e}")
    atomic_write(path.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text))
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.markdown_from is not None:
        return rewrite_markdown(args.markdown_from)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv]) if argv is None else \
        " ".join(shlex.quote(a) for a in ["python", "benchmarks/serving_overhead.py", *argv])
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from services.app import run_local, shutdown_local
    from services.client import TapsClient
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.speed import bench_prompts

    num_cpus = float(args.num_cpus if args.num_cpus is not None else os.cpu_count() or 1)
    if args.engine_threads is not None:
        torch.set_num_threads(args.engine_threads)
    if args.replica_threads is None:
        args.replica_threads = torch.get_num_threads()
    drafters = drafter_paths(args.drafter, args.target)
    config = serving_config(args, drafters, num_cpus)
    drafter = next(iter(drafters)) if args.policy == "single" else ""
    prompts = [p for _, p in bench_prompts(args.prompts)]   # (benchmark, prompt) pairs -> prompts

    print("loading the in-process engine", file=sys.stderr)
    try:
        target, engine = load_engine(args, drafters)
    except (OSError, ValueError) as e:
        fail(f"cannot load the target or a head: {e}")
    del target
    print("the in-process engine before Ray starts", file=sys.stderr)
    alone = engine_alone(engine, prompts, args, drafter)

    print(f"starting Ray Serve on {num_cpus:g} CPUs (gRPC port {config.router.grpc_port})", file=sys.stderr)
    ray_dir = tempfile.mkdtemp(prefix="taps-ray-")
    try:
        address = run_local(config, num_cpus=num_cpus, temp_dir=ray_dir)
    except (ValueError, RuntimeError, OSError) as e:
        fail(f"the serving system did not start: {e}")
    try:
        with TapsClient(address, timeout_s=args.timeout) as client:
            status = client.health()
            if status != "SERVING":
                fail(f"the service at {address} reports {status}")
            print("one client, interleaved with the in-process engine", file=sys.stderr)
            overhead = interleaved(engine, client, prompts, args, drafter)
            overhead["in_process_without_ray"] = alone
            overhead["per_token_time_ratio_service_over_in_process_without_ray"] = round(
                overhead["service"]["ms_per_token"] / alone["ms_per_token"], 3)
        del engine
        results = []
        for n in args.concurrency:
            print(f"{n} concurrent client(s)", file=sys.stderr)
            results.append(concurrent(address, prompts, args, drafter, n))
            print(f"  {results[-1]['total_tokens_per_s']} tok/s, mean latency {results[-1]['mean_latency_s']} s",
                  file=sys.stderr)
    finally:
        shutdown_local()

    report = {
        "command": command, "machine": machine(), "versions": versions(),
        "settings": {"target": args.target, "dtype": args.dtype, "transport": args.transport,
                     "colocated": args.colocated, "policy": args.policy,
                     "drafter_used": drafter,
                     "drafters": {k: shareable(p) if p is not None else None
                                  for k, p in drafters.items()},
                     "tree": TREE, "max_batch_size": args.max_batch_size, "replica_threads": args.replica_threads,
                     "n_prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
                     "temperature": 0.0, "ray_num_cpus": num_cpus,
                     "num_cpus_per_replica": config.verifier.deployment.ray_actor_options.num_cpus,
                     "cuda": torch.cuda.is_available()},
        "overhead": overhead, "concurrency": results}
    write_json(args.out, report)
    md, text = args.out.with_suffix(".md"), markdown(report)
    atomic_write(md, lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {args.out} and {md}", file=sys.stderr)
    print(text)
    return 0 if overhead["identical_outputs"] == overhead["n_prompts"] else 1


if __name__ == "__main__":
    sys.exit(main())
