"""`taps generate`, `taps bench speed` and `taps bench tau`: the engine's own commands."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from .acceptance import SamplingParams
from .cli_common import console, err, fail
from .decoding import Decoder
from .drafter_specs import default_drafters, parse_drafter_specs
from .fileio import atomic_write, write_json
from .head import DraftHead, head_method, load_head
from .metrics import summarize
from .policies import DEFAULT_ROUTING, POLICY_SPECS, policy_spec
from .settings import numerics_dtype
from .target import DEFAULT_TARGET, Target, load_target
from .tree import PAPER_TREE, SPEED_CPU_TREE, TreeSettings, default_tree, speed_tree

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)

TargetOpt = typer.Option(DEFAULT_TARGET, "--target", help="HF directory, Hub id, .gguf file, or the default alias.")
DrafterOpt = typer.Option(None, "--drafter", "-d",
                          help="NAME=PATH of a draft head (repeatable); default: the trained heads of the target.")
RandomOpt = typer.Option(0, "--random-drafters", help="Add N untrained heads (used when no drafter is found).")
POLICY_HELP = "; ".join(f"{s.name}: {s.summary}" for s in POLICY_SPECS) + "."
PolicyOpt = typer.Option("single", "--policy", help=POLICY_HELP)
TotalOpt = typer.Option(None, "--total-tokens", help="Tree nodes verified per step, root included "
                                                     "(default: 60 on GPUs, 16 on CPUs).")
DepthOpt = typer.Option(None, "--depth", help="Expansions after the root's top-k, EAGLE-2's convention: the deepest "
                                               "draft sits at depth + 1 (default: 5 on GPUs, 3 on CPUs).")
TopKOpt = typer.Option(None, "--top-k", help="Tree branching, EAGLE-2 top-k (default: 10 on GPUs, 4 on CPUs).")
DtypeOpt = typer.Option("auto", "--dtype", help="auto, bf16, fp16 or fp32.")
NumericsOpt = typer.Option("fast", "--numerics", help="exact: compute in fp32 so T=0 output equals plain greedy "
                           "decoding token for token; fast: --dtype as given (bf16 may drift from it).")


def tree_settings(target: Target, total_tokens: int | None, depth: int | None, top_k: int | None,
                  cost_aware: bool = False) -> TreeSettings:
    """The device's default tree with the options given on the command line."""
    given = {k: v for k, v in (("total_tokens", total_tokens), ("depth", depth), ("top_k", top_k)) if v is not None}
    return replace(default_tree(target.device), **given, cost_aware=cost_aware)


def load_models(target_spec: str, drafters: list[str] | None, random_drafters: int, random_default: int,
                dtype: str, numerics: str = "fast") -> tuple[Target, dict[str, DraftHead]]:
    """Target + named draft heads: the given ones, else the target's trained ones, else `random_default` random
    heads (with a warning); `random_drafters` adds random heads in any case."""
    paths = parse_drafter_specs(drafters or [])
    target = load_target(target_spec, dtype=numerics_dtype(dtype, numerics))
    if not paths and random_drafters == 0:
        paths = default_drafters(target_spec)
        if not paths:
            random_drafters = random_default
    heads: dict[str, DraftHead] = {name: load_head(path, target.model) for name, path in paths.items()}
    if random_drafters:
        err.print(f"[yellow]warning:[/yellow] using {random_drafters} untrained (random) draft head(s): "
                  "expect acceptance length ~1")
    for i in range(random_drafters):
        heads[f"random{i}"] = DraftHead.random(target.model, seed=i)
    return target, heads


def build_decoder(target_spec: str, drafters: list[str] | None, random_drafters: int, policy: str,
                  tree: tuple[int | None, int | None, int | None, bool], dtype: str, fallback: bool = False,
                  numerics: str = "fast") -> Decoder:
    spec = policy_spec(policy)  # fail fast, before loading any model
    target, heads = load_models(target_spec, drafters, random_drafters if spec.needs_drafters else 0,
                                (1 if spec.max_drafters == 1 else 2) if spec.needs_drafters else 0, dtype, numerics)
    return Decoder(target, heads if spec.needs_drafters else {}, policy, tree_settings(target, *tree),
                   fallback=fallback)


def generate(
    prompt: Optional[str] = typer.Argument(None, help="User prompt (rendered with the chat template)."),
    messages: Optional[Path] = typer.Option(None, help="JSON file with a list of {role, content} messages."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
    raw: bool = typer.Option(False, help="Send the prompt as raw text, without the chat template."),
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt, random_drafters: int = RandomOpt,
    policy: str = typer.Option(DEFAULT_ROUTING, "--policy", help=POLICY_HELP + " The default routes as `make run` "
                               "and `taps serve` do (results/serving/README.md)."),
    total_tokens: Optional[int] = TotalOpt, depth: Optional[int] = DepthOpt, top_k: Optional[int] = TopKOpt,
    use: Optional[str] = typer.Option(None, "--use",
                                      help="Drafter for `single` / assignment for `sticky` and `probe`."),
    max_new_tokens: int = typer.Option(256), temperature: float = typer.Option(0.0),
    top_p: float = typer.Option(1.0), sample_top_k: int = typer.Option(0, help="Target top-k when sampling."),
    seed: int = typer.Option(0), dtype: str = DtypeOpt, numerics: str = NumericsOpt,
    cost_aware: bool = typer.Option(False, "--cost-aware", help="The tree numbers become maxima; each step verifies "
                                    "as many ranked draft nodes as pay on this machine's measured cost curve."),
    fallback: bool = typer.Option(True, help="Step plainly while this request's speculative steps commit fewer "
                                                   "tokens per second than plain ones, probing again later."),
    json_out: bool = typer.Option(False, "--json", help="Print the result and its stats as JSON."),
) -> None:
    """Generate an answer with speculative decoding and print its acceptance statistics."""
    try:
        if messages is not None:
            try:
                chat = json.loads(messages.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"cannot read messages from {messages}: {e}") from e
        elif prompt is not None:
            chat = prompt if raw else [{"role": "user", "content": prompt}]
        else:
            raise ValueError("give a PROMPT or --messages FILE")
        if system and isinstance(chat, list):
            chat = [{"role": "system", "content": system}] + chat
        params = SamplingParams(max_new_tokens, temperature, top_p, sample_top_k, seed)
        decoder = build_decoder(target, drafter, random_drafters, policy, (total_tokens, depth, top_k, cost_aware),
                                dtype, fallback, numerics)
        result = decoder.generate(chat, params, drafter=use)
    except ValueError as e:
        fail(str(e))
    stats = summarize([result])
    if json_out:
        console.print_json(json.dumps({"policy": result.policy, "text": result.text, "token_ids": result.token_ids,
                                       "finish_reason": result.finish_reason, "decision": result.decision.to_dict(),
                                       "tokens_per_s": result.tokens_per_s, "plain_steps": result.plain_steps,
                                       **stats}))
        return
    console.print(result.text)
    table = Table(title=f"policy {result.policy}", show_header=False)
    for key, value in [("new tokens", len(result.token_ids)), ("finish", result.finish_reason),
                       ("verify steps", f"{stats['n_steps']} ({result.plain_steps} plain)"),
                       ("mean acceptance length", f"{stats['tau']:.3f}"),
                       ("tokens/s", f"{result.tokens_per_s:.2f}"),
                       ("acceptance by depth", {d: round(r, 3) for d, r in stats["acceptance_rate_by_depth"].items()}),
                       ("drafter shares", {k: round(v, 3) for k, v in stats["drafter_selection_shares"].items()}),
                       ("decision", result.decision.to_dict())]:
        table.add_row(key, str(value))
    console.print(table)


@bench_app.command("speed")
def bench_speed(
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt, random_drafters: int = RandomOpt,
    policy: list[str] = typer.Option(["single"], "--policy", help="Engine policies to run (repeatable); `single` "
                                     "runs once per drafter."),
    tree: Optional[list[str]] = typer.Option(None, "--tree", help="TOTAL/DEPTH/TOPK trees (+cost: cost-aware, those "
                                             "numbers the maxima) to run each policy with (repeatable; default: the "
                                             "device's tree)."),
    prompts: int = typer.Option(4, help="Prompts per benchmark."),
    benchmark: list[str] = typer.Option(["gsm8k", "mt_bench"], help="Benchmarks the prompts come from (repeatable)."),
    max_new_tokens: int = typer.Option(64), dtype: str = DtypeOpt, numerics: str = NumericsOpt,
    fallback: bool = typer.Option(True, help="Step plainly while speculation loses (see `taps generate`)."),
    out: Optional[Path] = typer.Option(None, help="Also write the report as JSON here (and Markdown beside it)."),
) -> None:
    """Tokens/s of transformers generate, prompt-lookup decoding, the engine's plain loop and engine policies on the
    same prompts, with the step time split and the machine's verify cost curve."""
    from .speed import bench_prompts, plot_calibration, report_markdown, run_speed_bench, speed_engines

    try:
        if prompts <= 0 or max_new_tokens <= 0:
            raise ValueError("--prompts and --max-new-tokens must be positive")
        specs = [policy_spec(p) for p in policy]
        trees = [TreeSettings.parse(t) for t in tree or []]
        loaded, heads = load_models(target, drafter, random_drafters, 2, dtype, numerics)
        engines = speed_engines(loaded, heads, specs, trees or [default_tree(loaded.device)], fallback)
        with console.status("benchmarking") as status:
            report = run_speed_bench(loaded, engines, bench_prompts(prompts, tuple(benchmark)), max_new_tokens,
                                     progress=lambda msg: status.update(msg))
    except ValueError as e:
        fail(str(e))
    home = str(Path.home())
    command = " ".join(["taps bench speed", f"--target {target}",
                        *(f"--drafter {d.replace(home, '~')}" for d in drafter or []),
                        *(f"--policy {p}" for p in policy), *(f"--tree {t}" for t in tree or []),
                        *(f"--benchmark {b}" for b in benchmark),
                        f"--prompts {prompts} --max-new-tokens {max_new_tokens} --dtype {dtype} --numerics {numerics}",
                        "--fallback" if fallback else "--no-fallback", *([f"--out {out}"] if out else [])])
    markdown = report_markdown(report, command)
    console.print(markdown, markup=False)
    if out is not None:
        write_json(out, report)
        plot = out.with_suffix(".calibration.png")
        if plot_calibration(report, plot):
            markdown += f"\nCalibration of the cost-aware trees' draft confidence: ![calibration]({plot.name})\n"
        atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(markdown))


@bench_app.command("cost")
def bench_cost(target: str = TargetOpt, dtype: str = DtypeOpt) -> None:
    """Measure this machine's verify cost curve for the target again and cache it (the cost-aware tree and
    `taps bench speed` read it)."""
    from .costs import cost_path, machine, verify_costs

    try:
        loaded = load_target(target, dtype=dtype)
        curve = verify_costs(loaded, remeasure=True)
    except ValueError as e:
        fail(str(e))
    table = Table(title=f"{target} ({str(loaded.dtype).replace('torch.', '')}, {loaded.device}) on {machine()['cpu']}")
    for col in ("tokens verified", "ms", "x one token"):
        table.add_column(col)
    for n, ms in curve.items():
        table.add_row(str(n), f"{ms:.1f}", f"{ms / curve[1]:.2f}")
    console.print(table)
    console.print(f"cached in {cost_path(loaded)}")


@bench_app.command("tau")
def bench_tau(
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt, random_drafters: int = RandomOpt,
    policy: str = PolicyOpt, total_tokens: Optional[int] = TotalOpt, depth: Optional[int] = DepthOpt,
    top_k: Optional[int] = TopKOpt,
    benchmark: list[str] = typer.Option(["gsm8k", "mt_bench"], help="gsm8k and/or mt_bench (repeatable)."),
    n: int = typer.Option(20, help="Prompts per benchmark."), max_new_tokens: int = typer.Option(128),
    temperature: float = typer.Option(0.0), dtype: str = DtypeOpt, numerics: str = NumericsOpt,
    out: Optional[Path] = typer.Option(None, help="Append the records to this JSON list."),
    replayed: bool = typer.Option(False, "--replay", help="T=0 only: decode each prompt once plainly, then replay "
                                  "every drafter's steps against that answer (exact τ, no verification passes; "
                                  "taps_engine/replay.py). Tokens/s is then not reported."),
) -> None:
    """Mean acceptance length of each drafter (policy `single`) or of a policy, per benchmark."""
    from .eval_sets import benchmark_prompts
    from .replay import References, replay

    try:
        params = SamplingParams(max_new_tokens, temperature)
        if replayed and not params.greedy:
            raise ValueError("--replay reproduces T=0 only; drop it to sample live")
        prompts = {b: benchmark_prompts(b, n) for b in benchmark}
        decoder = build_decoder(target, drafter, random_drafters, policy, (total_tokens, depth, top_k, False), dtype,
                                numerics=numerics)
        methods = {name: head_method(path) for name, path in parse_drafter_specs(drafter or []).items()}
    except ValueError as e:
        fail(str(e))
    runs = list(decoder.drafters) if policy_spec(policy).name == "single" else [None]
    references = References(decoder.target, max_new_tokens, decoder.tree.depth + 2) if replayed else None
    records = []
    for name in runs:
        for bench, items in prompts.items():
            with console.status(f"{name or policy} on {bench}"):
                asked = [decoder.format.user_prompt(p) for p in items]
                results = [replay(decoder, references(prompt), params, drafter=name) if replayed else
                           decoder.generate(prompt, SamplingParams(max_new_tokens, temperature, seed=i), drafter=name)
                           for i, prompt in enumerate(asked)]
            stats = summarize(results)
            records.append({"method": methods.get(name, "random"), "drafter": name or "+".join(decoder.drafters),
                            "policy": policy, "benchmark": bench, "mode": "replay" if replayed else "live",
                            "temperature": temperature, "tau": round(stats["tau"], 4),
                            "tau_macro": round(stats["tau_macro"], 4), "n_prompts": len(items),
                            "n_steps": stats["n_steps"], "new_tokens": stats["new_tokens"],
                            "tokens_per_s": None if replayed else
                            round(stats["new_tokens"] / sum(r.seconds for r in results), 2),
                            "tree": asdict(decoder.tree), "dtype": str(decoder.target.dtype).replace("torch.", ""),
                            "max_new_tokens": max_new_tokens, "target": target})
            console.print(records[-1])
    if out is not None:
        existing = json.loads(out.read_text()) if out.exists() else []
        write_json(out, existing + records)


DEMO_PROMPTS = {
    "math": "A farmer has 17 sheep and buys 5 more. Then he sells 8. How many sheep does he have now?",
    "chat": "Write a short, friendly note inviting my neighbours to a garden party on Saturday.",
}


def demo(
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt,
    policy: str = typer.Option(DEFAULT_ROUTING, "--policy", help="Policy over the drafters."),
    max_new_tokens: int = typer.Option(96), dtype: str = DtypeOpt, numerics: str = NumericsOpt,
    tree: Optional[str] = typer.Option(None, "--tree", help="TOTAL/DEPTH/TOPK, +cost for a cost-aware tree; default: "
                                       f"{SPEED_CPU_TREE.label} on a CPU, the paper's {PAPER_TREE.label} on a GPU."),
) -> None:
    """One math and one chat prompt with the shipped drafters (or the --drafter heads, to try a candidate) under a
    routing policy, next to the engine's plain loop on the same prompt: the answer, τ, which drafter each step used,
    and tokens/s. Probe routing by default: after a few steps of every head drafting it keeps the head whose trees
    matched the output, so most steps cost one tree's drafting instead of confidence routing's two, and unlike
    sticky (which scores the heads on the prompt) it routes by task (results/engine/README.md, "Which policy `make
    run` uses"). On a CPU it drafts a cost-aware tree (tree.speed_tree)."""
    from .decoding import PlainDecoder

    try:
        policy_spec(policy)
        settings = TreeSettings.parse(tree) if tree else None
        loaded, heads = load_models(target, drafter, 0, 2, dtype, numerics)
        settings = settings or speed_tree(loaded.device)
        decoder = Decoder(loaded, heads, policy, settings, fallback=True)
        plain = PlainDecoder(loaded)
    except ValueError as e:
        fail(str(e))
    params = SamplingParams(max_new_tokens)
    decoder.generate("Hello!", SamplingParams(4))   # warm-up: first calls pay one-time costs
    plain.generate("Hello!", SamplingParams(4))
    table = Table(title=f"{target}, policy {policy} over {', '.join(decoder.drafters)}, tree {decoder.tree.label}, "
                        f"greedy, {max_new_tokens} new tokens")
    for col in ("prompt", "τ", "τ of drafted steps", "plain steps", "drafter shares", "tokens/s", "plain tokens/s",
                "speed-up", "same as plain"):
        table.add_column(col)
    for kind, prompt in DEMO_PROMPTS.items():
        messages = loaded.format.user_prompt(prompt)
        result, base = decoder.generate(messages, params), plain.generate(messages, params)
        console.rule(f"{kind}: {prompt}")
        console.print(result.text, markup=False, highlight=False)
        shares = summarize([result])["drafter_selection_shares"]
        table.add_row(kind, f"{result.tau:.2f}", f"{result.drafted_tau:.2f}", f"{result.plain_steps}/{len(result.steps)}",
                      ", ".join(f"{k} {v:.0%}" for k, v in shares.items()),
                      f"{result.tokens_per_s:.1f}", f"{base.tokens_per_s:.1f}",
                      f"{result.tokens_per_s / base.tokens_per_s:.2f}x", str(result.token_ids == base.token_ids))
    console.print(table)
    if loaded.dtype != torch.float32:
        console.print(f"In {str(loaded.dtype).replace('torch.', '')}, a tree forward rounds differently from one-token "
                      "forwards, so greedy outputs can drift from plain decoding after a while; `--numerics exact` "
                      "reproduces plain decoding exactly.")


def register(root: typer.Typer) -> None:
    root.command()(generate)
    root.command()(demo)
    root.add_typer(bench_app, name="bench")
