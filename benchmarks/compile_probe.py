"""Does `torch.compile` pay for the engine on this machine? Eager vs compiled, side by side on the same prompts.

Usage: python benchmarks/compile_probe.py --prompts 3 --max-new-tokens 64 --out results/engine/compile.md

Three engines run interleaved per prompt: eager, the draft head compiled, and the target's decoder forward
compiled (`dynamic=True` for both: the context and tree sizes change every step). Each runs the engine's plain
loop and `single` with the shipped math drafter (16/3/4). Compilation happens on warm-up prompts that are not
timed, within `--warmup-limit-s` per variant (a variant that does not finish is reported as such); the report
gives tokens/s, the ratio to eager, whether the outputs equal eager's, and the warm-up time.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import torch
import typer

from taps_engine import Decoder, PlainDecoder, load_head, load_target
from taps_engine.costs import machine
from taps_engine.drafter_specs import default_drafters
from taps_engine.fileio import write_report
from taps_engine.speed import bench_prompts
from taps_engine.target import DEFAULT_TARGET
from taps_engine.tree import TreeSettings

TREE = TreeSettings(total_tokens=16, depth=3, top_k=4)
VARIANTS = ("eager", "compiled head", "compiled target")


def engines(variant: str, dtype: str) -> dict[str, Decoder]:
    """A fresh target per variant, so compiling one leaves the others' modules eager."""
    target = load_target(DEFAULT_TARGET, dtype=dtype)
    head = load_head(default_drafters(DEFAULT_TARGET)["math"], target.model)
    if variant == "compiled target":
        decoder = target.model.get_decoder()
        decoder.forward = torch.compile(decoder.forward, dynamic=True)
    if variant == "compiled head":
        head.forward = torch.compile(head.forward, dynamic=True)
    return {"plain": PlainDecoder(target), "single[math]": Decoder(target, {"math": head}, "single", TREE)}


def _out_of_time(signum, frame) -> None:
    raise TimeoutError("warm-up (compilation) did not finish within the limit")


def main(prompts: int = typer.Option(3, min=1), max_new_tokens: int = typer.Option(64, min=1),
         threads: int = typer.Option(2, min=1), dtype: str = "auto", warmup_limit_s: int = typer.Option(180, min=1),
         out: Path = typer.Option(...)) -> None:
    torch.set_num_threads(threads)
    items = bench_prompts(prompts)
    runs = {}
    for variant in VARIANTS:
        start = time.perf_counter()
        signal.signal(signal.SIGALRM, _out_of_time)
        signal.alarm(warmup_limit_s)
        try:
            built = engines(variant, dtype)
            for engine in built.values():
                for _, text in items[:2]:      # compile (and warm up) on the first prompts' shapes
                    engine.generate(text, max_new_tokens=16)
        except Exception as e:  # a compile failure or timeout is a result of the probe, reported as such
            message = " ".join(str(e).split())[:160]
            runs[variant] = {"error": f"{type(e).__name__} after {time.perf_counter() - start:.0f} s: {message}"}
            continue
        finally:
            signal.alarm(0)
        runs[variant] = {"engines": built, "warmup_s": time.perf_counter() - start,
                         "tokens": dict.fromkeys(built, 0), "seconds": dict.fromkeys(built, 0.0),
                         "outputs": {name: [] for name in built}}
    live = [v for v in VARIANTS if "engines" in runs[v]]
    for _, text in items:
        for name in ("plain", "single[math]"):
            for variant in live:
                result = runs[variant]["engines"][name].generate(text, max_new_tokens=max_new_tokens)
                runs[variant]["tokens"][name] += len(result.token_ids)
                runs[variant]["seconds"][name] += result.seconds
                runs[variant]["outputs"][name].append(result.token_ids)
    m = machine()
    lines = [f"Command: `python benchmarks/compile_probe.py --prompts {prompts} --max-new-tokens {max_new_tokens} "
             f"--threads {threads} --dtype {dtype} --warmup-limit-s {warmup_limit_s} --out {out}`", "",
             f"Machine: {m['cpu']} (native bf16: {'yes' if m['native_bf16'] else 'no'}), {threads} torch threads, "
             f"torch {torch.__version__}, dtype {dtype}.", "",
             f"{len(items)} prompts (GSM8K, MT-Bench), greedy, {max_new_tokens} new tokens, interleaved per prompt; "
             f"tree {TREE.total_tokens}/{TREE.depth}/{TREE.top_k}.", "",
             "| variant | engine | tokens/s | x eager | same output as eager | warm-up incl. compile (s) |",
             "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        run = runs[variant]
        if "error" in run:
            lines.append(f"| {variant} | - | failed: {run['error']} | | | |")
            continue
        for name in ("plain", "single[math]"):
            rate = run["tokens"][name] / run["seconds"][name]
            eager = runs["eager"]
            base = eager["tokens"][name] / eager["seconds"][name] if "tokens" in eager else float("nan")
            same = sum(a == b for a, b in zip(run["outputs"][name], eager.get("outputs", {}).get(name, [])))
            lines.append(f"| {variant} | {name} | {rate:.2f} | {rate / base:.2f} | {same}/{len(items)} | "
                         f"{run['warmup_s']:.0f} |")
    write_report(out, lines)


if __name__ == "__main__":
    typer.run(main)
