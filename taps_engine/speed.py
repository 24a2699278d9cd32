"""Side-by-side speed benchmark in one process: transformers' plain and prompt-lookup decoding, the engine's plain
loop, and engine decoders, on the same prompts, interleaved per prompt so machine noise is shared.

Each engine row splits its step time into drafting, verification and the rest, and the report carries the verify
cost curve of the machine (taps_engine/costs.py) and what the machine is, so a ratio can be explained.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from .costs import machine, measure_verify_costs
from .decoding import Decoder, GenerationResult, PlainDecoder
from .eval_sets import benchmark_prompts
from .head import DraftHead
from .policies import PolicySpec
from .target import Target
from .tree import TreeSettings

FALLBACK_PROMPTS = {
    "mt_bench": ["Explain in a few sentences why the sky is blue.", "Write a short poem about the sea."],
    "gsm8k": ["Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
              "How many clips did Natalia sell altogether in April and May?",
              "A train travels 60 km in 1.5 hours. What is its average speed in km/h?"],
}
GENERATE, LOOKUP, PLAIN = "transformers generate", "transformers prompt-lookup", "engine plain"


def bench_prompts(n: int, benchmarks: tuple[str, ...] = ("gsm8k", "mt_bench")) -> list[tuple[str, str]]:
    """(benchmark, prompt) pairs: `n` first prompts of each benchmark from the data dir (fixed ones without it)."""
    out = []
    for name in benchmarks:
        try:
            prompts = benchmark_prompts(name, n)
        except ValueError as e:
            if name not in FALLBACK_PROMPTS:
                raise
            warnings.warn(f"{e}; using built-in prompts")
            prompts = [FALLBACK_PROMPTS[name][i % len(FALLBACK_PROMPTS[name])] for i in range(n)]
        out += [(name, p) for p in prompts]
    return out


def speed_engines(target: Target, heads: dict[str, DraftHead], specs: list[PolicySpec],
                  trees: list[TreeSettings], fallback: bool) -> dict[str, Decoder]:
    """One decoder per (tree, policy), and per drafter for single-drafter policies, named for the report."""
    engines = {}
    for settings in trees:
        for spec in specs:
            groups = [[name] for name in heads] if spec.max_drafters == 1 else [list(heads)]
            for names in groups:
                name = f"{spec.name}[{','.join(names)}] {settings.label}" if spec.max_drafters == 1 else \
                    f"{spec.name} {settings.label}"
                engines[name] = Decoder(target, {n: heads[n] for n in names}, spec.name, settings, fallback=fallback)
    return engines


def hf_generate(target: Target, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0,
                seed: int = 0, prompt_lookup: bool = False) -> list[int]:
    """transformers' own decoding (plain, or prompt-lookup): the peers every speed ratio is taken against."""
    inputs = torch.tensor([prompt_ids], device=target.device)
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else \
        dict(do_sample=False)
    if temperature > 0:
        torch.manual_seed(seed)
    out = target.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=max_new_tokens,
                                pad_token_id=target.tokenizer.eos_token_id,
                                **({"prompt_lookup_num_tokens": 10} if prompt_lookup else {}), **sampling)
    return out[0, len(prompt_ids):].tolist()


@dataclass
class Runs:
    """One method's outputs, per prompt."""

    outputs: list[list[int]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    results: list[GenerationResult | None] = field(default_factory=list)


def _row(name: str, runs: Runs, keep: list[int], base: Runs, plain: Runs) -> dict:
    """Totals over the prompts `keep`: tokens/s, ratios, tau and the step time split."""
    def rate(r: Runs) -> float:
        seconds = sum(r.seconds[i] for i in keep)
        return sum(len(r.outputs[i]) for i in keep) / seconds if seconds else 0.0

    steps = [s for i in keep if runs.results[i] is not None for s in runs.results[i].steps]
    row = {"method": name, "new_tokens": sum(len(runs.outputs[i]) for i in keep),
           "seconds": round(sum(runs.seconds[i] for i in keep), 3), "tokens_per_s": round(rate(runs), 2),
           "x_generate": round(rate(runs) / rate(base), 3), "x_engine_plain": round(rate(runs) / rate(plain), 3),
           "same_output_as_generate": sum(runs.outputs[i] == base.outputs[i] for i in keep), "n_prompts": len(keep)}
    if steps:
        row.update(tau=round(sum(s.acceptance_length for s in steps) / len(steps), 3), steps=len(steps),
                   plain_steps=sum(s.tree_size == 0 for s in steps),
                   ms_draft=round(1e3 * sum(s.draft_s for s in steps) / len(steps), 2),
                   ms_verify=round(1e3 * sum(s.verify_s for s in steps) / len(steps), 2),
                   ms_other=round(1e3 * sum(s.other_s for s in steps) / len(steps), 2))
    return row


def prompt_groups(prompts: list[tuple[str, str]]) -> dict[str, list[int]]:
    """The indices of (benchmark, prompt) pairs a report totals over: "all", then each benchmark in order."""
    groups = {"all": list(range(len(prompts)))}
    for b in dict.fromkeys(b for b, _ in prompts):
        groups[b] = [i for i, (name, _) in enumerate(prompts) if name == b]
    return groups


def run_speed_bench(target: Target, engines: dict[str, Decoder], prompts: list[tuple[str, str]],
                    max_new_tokens: int, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Greedy decoding of the same prompts by every method, interleaved per prompt."""
    ids = [target.format.encode(target.format.user_prompt(p)) for _, p in prompts]
    plain = PlainDecoder(target)

    def engine(decoder: Decoder) -> Callable[[list[int]], tuple[list[int], GenerationResult | None]]:
        def run(x: list[int]) -> tuple[list[int], GenerationResult]:
            result = decoder.generate(x, max_new_tokens=max_new_tokens)
            return result.token_ids, result
        return run

    methods = {
        GENERATE: lambda x: (hf_generate(target, x, max_new_tokens), None),
        LOOKUP: lambda x: (hf_generate(target, x, max_new_tokens, prompt_lookup=True), None),
        PLAIN: engine(plain), **{name: engine(d) for name, d in engines.items()},
    }
    runs = {name: Runs() for name in methods}
    with torch.inference_mode():
        for run in methods.values():  # warm-up: first calls pay one-time costs
            run(ids[0][:16])
        for i, x in enumerate(ids):
            progress(f"prompt {i + 1}/{len(ids)}")
            for name, run in methods.items():
                start = time.perf_counter()
                out, result = run(x)
                runs[name].seconds.append(time.perf_counter() - start)
                runs[name].outputs.append(out)
                runs[name].results.append(result)
    progress("verify cost curve")
    groups = prompt_groups(prompts)
    rows = {group: [_row(name, r, keep, runs[GENERATE], runs[PLAIN]) for name, r in runs.items()]
            for group, keep in groups.items()}
    return {"target": target.name, "dtype": str(target.dtype).replace("torch.", ""), "device": str(target.device),
            "machine": machine(), "n_prompts": len(prompts), "benchmarks": list(groups)[1:],
            "max_new_tokens": max_new_tokens,
            "engines": {name: {"policy": d.policy.name, "drafters": list(d.drafters), "tree": asdict(d.tree),
                               "fallback": d.fallback,
                               "calibration": d.costs.calibration.curve() if d.costs is not None else None}
                        for name, d in engines.items()},
            "verify_ms": measure_verify_costs(target), "rows": rows,
            "per_prompt": {name: _per_prompt(r) for name, r in runs.items()}}


def _per_prompt(runs: Runs) -> dict:
    """Each prompt's new tokens and seconds, and its verification steps and tokens they committed (engine
    decoders): what a paired interval over prompts resamples."""
    out = {"new_tokens": [len(o) for o in runs.outputs], "seconds": [round(s, 4) for s in runs.seconds]}
    if all(r is not None for r in runs.results):
        out.update(steps=[len(r.steps) for r in runs.results],
                   committed=[sum(s.acceptance_length for s in r.steps) for r in runs.results])
    return out


def report_markdown(report: dict, command: str) -> str:
    """The benchmark as Markdown: overall table, per-benchmark ratios, the verify cost curve and the machine."""
    m = report["machine"]
    lines = [f"Command: `{command}`", "",
             f"Target {report['target']} ({report['dtype']}, {report['device']}); CPU {m['cpu']} "
             f"(native bf16: {', '.join(m.get('bf16_flags') or []) or ('yes' if m['native_bf16'] else 'no')}), "
             f"{m['torch_threads']} torch threads"
             + (f", GPU {m['gpu']}" if m["gpu"] else "") + f". {report['n_prompts']} prompts "
             f"({', '.join(report['benchmarks'])}), greedy, max {report['max_new_tokens']} new tokens, interleaved "
             "per prompt.", "",
             "| method | tokens/s | x generate | x engine plain | tau | plain steps | ms/step draft | verify | other "
             "| same output as generate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]["all"]:
        tau = f"{row['tau']:.2f}" if "tau" in row else ""
        split = [f"{row[k]:.1f}" if k in row else "" for k in ("ms_draft", "ms_verify", "ms_other")]
        plain_steps = f"{row['plain_steps']}/{row['steps']}" if "steps" in row else ""
        lines.append(f"| {row['method']} | {row['tokens_per_s']:.2f} | {row['x_generate']:.2f} | "
                     f"{row['x_engine_plain']:.2f} | {tau} | {plain_steps} | {' | '.join(split)} | "
                     f"{row['same_output_as_generate']}/{row['n_prompts']} |")
    lines += ["", "Per benchmark (x engine plain, tau):", "",
              "| method | " + " | ".join(report["benchmarks"]) + " |", "|---|" + "---|" * len(report["benchmarks"])]
    by_method = {b: {r["method"]: r for r in report["rows"][b]} for b in report["benchmarks"]}
    for row in report["rows"]["all"]:
        cells = []
        for b in report["benchmarks"]:
            r = by_method[b][row["method"]]
            cells.append(f"{r['x_engine_plain']:.2f}" + (f" (τ {r['tau']:.2f})" if "tau" in r else ""))
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    curve = report["verify_ms"]
    one = curve.get(1) or curve.get("1")
    lines += ["", "Verify cost on this machine (ms for one verification of n tokens after a 200-token context):", "",
              "| n | " + " | ".join(str(n) for n in curve) + " |", "|---|" + "---|" * len(curve),
              "| ms | " + " | ".join(f"{ms:.1f}" for ms in curve.values()) + " |",
              "| x one token | " + " | ".join(f"{ms / one:.2f}" for ms in curve.values()) + " |", ""]
    return "\n".join(lines)


def plot_calibration(report: dict, path) -> bool:
    """Acceptance rate of drafted nodes by draft confidence, one line per cost-aware engine (False: none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: e["calibration"] for name, e in report["engines"].items() if e.get("calibration")}
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="confidence = acceptance")
    for name, curve in curves.items():
        points = [((b["low"] + b["high"]) / 2, b["accepted"]) for b in curve if b["nodes"] >= 20]
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xlabel("draft confidence (exp of cumulative log-prob)")
    ax.set_ylabel("share of verified nodes accepted")
    ax.set_title("Calibration of draft confidence (bins with >= 20 nodes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
