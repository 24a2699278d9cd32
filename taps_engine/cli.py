"""`taps` command line: generate with drafters and a policy, and benchmark speed side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from transformers.utils import logging as hf_logging

from .acceptance import SamplingParams
from .cli_common import console, err, fail
from .decoding import Decoder
from .drafter import TreeSettings
from .fileio import atomic_write, write_json
from .head import DraftHead, load_head
from .metrics import summarize
from .policies import POLICIES, make_policy
from .target import DEFAULT_TARGET, Target, load_target

app = typer.Typer(help="TAPS: task-aware speculative decoding.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
hf_logging.disable_progress_bar()

TargetOpt = typer.Option(DEFAULT_TARGET, "--target", help="HF directory, Hub id, .gguf file, or the default alias.")
DrafterOpt = typer.Option(None, "--drafter", "-d", help="NAME=PATH of a draft head (repeatable).")
RandomOpt = typer.Option(0, "--random-drafters", help="Add N untrained heads (used when no --drafter is given).")
PolicyOpt = typer.Option("single", "--policy", help=f"One of: {', '.join(POLICIES)}.")
TotalOpt = typer.Option(60, "--total-tokens", help="Tree nodes verified per step, root included.")
DepthOpt = typer.Option(5, "--depth", help="Tree expansion depth.")
TopKOpt = typer.Option(10, "--top-k", help="Tree branching (EAGLE-2 top-k).")
DtypeOpt = typer.Option("auto", "--dtype", help="auto, bf16, fp16 or fp32.")


def build_decoder(target_spec: str, drafters: list[str] | None, random_drafters: int, policy: str,
                  tree: TreeSettings, dtype: str) -> Decoder:
    """Target + named drafters (+ random heads as placeholders until trained heads exist)."""
    make_policy(policy)  # fail fast, before loading any model
    parsed = []
    for spec in drafters or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--drafter must look like NAME=PATH, got {spec!r}")
        if not Path(path).exists():
            raise ValueError(f"drafter {name!r}: {path} does not exist")
        parsed.append((name, path))
    target: Target = load_target(target_spec, dtype=dtype)
    heads: dict[str, DraftHead] = {name: load_head(path, target.model) for name, path in parsed}
    if not heads and policy != "plain" and random_drafters == 0:
        random_drafters = 2 if policy != "single" else 1
    if random_drafters:
        err.print(f"[yellow]warning:[/yellow] using {random_drafters} untrained (random) draft head(s): "
                  "expect acceptance length ~1")
    for i in range(random_drafters):
        heads[f"random{i}"] = DraftHead.random(target.model, seed=i)
    return Decoder(target, heads, policy, tree)


@app.command()
def generate(
    prompt: Optional[str] = typer.Argument(None, help="User prompt (rendered with the chat template)."),
    messages: Optional[Path] = typer.Option(None, help="JSON file with a list of {role, content} messages."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
    raw: bool = typer.Option(False, help="Send the prompt as raw text, without the chat template."),
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt, random_drafters: int = RandomOpt,
    policy: str = PolicyOpt, total_tokens: int = TotalOpt, depth: int = DepthOpt, top_k: int = TopKOpt,
    use: Optional[str] = typer.Option(None, "--use", help="Drafter for `single` / assignment for `sticky`."),
    max_new_tokens: int = typer.Option(256), temperature: float = typer.Option(0.0),
    top_p: float = typer.Option(1.0), sample_top_k: int = typer.Option(0, help="Target top-k when sampling."),
    seed: int = typer.Option(0), dtype: str = DtypeOpt,
    json_out: bool = typer.Option(False, "--json", help="Print the result and its stats as JSON."),
) -> None:
    """Generate an answer with speculative decoding and print its acceptance statistics."""
    try:
        SamplingParams(max_new_tokens, temperature, top_p, sample_top_k, seed)
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
        decoder = build_decoder(target, drafter, random_drafters, policy,
                                TreeSettings(total_tokens, depth, top_k), dtype)
        result = decoder.generate(chat, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  top_k=sample_top_k, seed=seed, drafter=use)
    except ValueError as e:
        fail(str(e))
    stats = summarize([result])
    if json_out:
        console.print_json(json.dumps({"text": result.text, "token_ids": result.token_ids,
                                       "finish_reason": result.finish_reason, "decision": result.decision,
                                       "tokens_per_s": result.tokens_per_s, **stats}))
        return
    console.print(result.text)
    table = Table(title=f"policy {result.policy}", show_header=False)
    for key, value in [("new tokens", len(result.token_ids)), ("finish", result.finish_reason),
                       ("verify steps", stats["n_steps"]), ("mean acceptance length", f"{stats['tau']:.3f}"),
                       ("tokens/s", f"{result.tokens_per_s:.2f}"),
                       ("acceptance by depth", {d: round(r, 3) for d, r in stats["acceptance_rate_by_depth"].items()}),
                       ("drafter shares", {k: round(v, 3) for k, v in stats["drafter_selection_shares"].items()}),
                       ("decision", result.decision)]:
        table.add_row(key, str(value))
    console.print(table)


@bench_app.command("speed")
def bench_speed(
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt, random_drafters: int = RandomOpt,
    policy: str = PolicyOpt, total_tokens: int = typer.Option(16, "--total-tokens"),
    depth: int = typer.Option(4, "--depth"), top_k: int = typer.Option(4, "--top-k"),
    prompts: int = typer.Option(4, help="Number of prompts (MT-Bench and GSM8K alternating)."),
    max_new_tokens: int = typer.Option(64), dtype: str = DtypeOpt,
    out: Optional[Path] = typer.Option(None, help="Also write the table as JSON here."),
) -> None:
    """Tokens/s of transformers generate, prompt-lookup decoding and the engine on the same prompts."""
    from .speed import bench_prompts, report_markdown, run_speed_bench

    try:
        if prompts <= 0 or max_new_tokens <= 0:
            raise ValueError("--prompts and --max-new-tokens must be positive")
        decoder = build_decoder(target, drafter, random_drafters, policy,
                                TreeSettings(total_tokens, depth, top_k), dtype)
        with console.status("benchmarking") as status:
            report = run_speed_bench(decoder.target, decoder, bench_prompts(prompts), max_new_tokens,
                                     progress=lambda msg: status.update(msg))
    except ValueError as e:
        fail(str(e))
    table = Table(title=f"{report['target']} ({report['dtype']}, {report['device']}), {report['n_prompts']} prompts, "
                        f"max {report['max_new_tokens']} new tokens, greedy")
    for col in ("method", "tokens/s", "x generate", "x prompt-lookup", "same as generate", "tau"):
        table.add_column(col)
    for row in report["rows"]:
        table.add_row(row["method"], f"{row['tokens_per_s']:.2f}", f"{row['speedup_vs_generate']:.2f}",
                      f"{row['speedup_vs_prompt_lookup']:.2f}",
                      f"{row['same_output_as_generate']}/{report['n_prompts']}",
                      "" if row["tau"] is None else f"{row['tau']:.2f}")
    console.print(table)
    if out is not None:
        write_json(out, report)
        home = str(Path.home())
        command = " ".join(["taps bench speed", f"--target {target}",
                            *(f"--drafter {d.replace(home, '~')}" for d in drafter or []),
                            f"--random-drafters {random_drafters}", f"--policy {policy}",
                            f"--total-tokens {total_tokens} --depth {depth} --top-k {top_k}",
                            f"--prompts {prompts} --max-new-tokens {max_new_tokens} --dtype {dtype} --out {out}"])
        atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(report_markdown(report, command)))


@bench_app.command("tau")
def bench_tau(
    target: str = TargetOpt, drafter: Optional[list[str]] = DrafterOpt, random_drafters: int = RandomOpt,
    policy: str = PolicyOpt, total_tokens: int = TotalOpt, depth: int = DepthOpt, top_k: int = TopKOpt,
    benchmark: list[str] = typer.Option(["gsm8k", "mt_bench"], help="gsm8k and/or mt_bench (repeatable)."),
    n: int = typer.Option(20, help="Prompts per benchmark."), max_new_tokens: int = typer.Option(128),
    temperature: float = typer.Option(0.0), dtype: str = DtypeOpt,
    out: Optional[Path] = typer.Option(None, help="Append the records to this JSON list."),
) -> None:
    """Mean acceptance length of each drafter (policy `single`) or of a policy, per benchmark."""
    from .benchmarks import benchmark_prompts

    try:
        SamplingParams(max_new_tokens, temperature)
        prompts = {b: benchmark_prompts(b, n) for b in benchmark}
        decoder = build_decoder(target, drafter, random_drafters, policy,
                                TreeSettings(total_tokens, depth, top_k), dtype)
    except ValueError as e:
        fail(str(e))
    runs = list(decoder.drafters) if policy == "single" else [None]
    methods = {}
    for spec in drafter or []:
        name, _, path = spec.partition("=")
        config = Path(path) / "config.json"
        methods[name] = json.loads(config.read_text()).get("method", "eagle2") if config.exists() else "eagle2"
    records = []
    for name in runs:
        for bench, items in prompts.items():
            with console.status(f"{name or policy} on {bench}"):
                results = [decoder.generate([{"role": "user", "content": p}], max_new_tokens=max_new_tokens,
                                            temperature=temperature, seed=i, drafter=name)
                           for i, p in enumerate(items)]
            stats = summarize(results)
            records.append({"method": methods.get(name, "random"), "drafter": name or "+".join(decoder.drafters),
                            "policy": policy, "benchmark": bench,
                            "temperature": temperature, "tau": round(stats["tau"], 4),
                            "tau_macro": round(stats["tau_macro"], 4), "n_prompts": len(items),
                            "n_steps": stats["n_steps"], "new_tokens": stats["new_tokens"],
                            "tokens_per_s": round(stats["new_tokens"] / sum(r.seconds for r in results), 2),
                            "tree": {"total_tokens": total_tokens, "depth": depth, "top_k": top_k},
                            "max_new_tokens": max_new_tokens, "target": target})
            console.print(records[-1])
    if out is not None:
        existing = json.loads(out.read_text()) if out.exists() else []
        write_json(out, existing + records)


from training.cli import register as _register_training_commands  # noqa: E402  (training builds on the engine)

_register_training_commands(app)

from .evaluation.cli import register as _register_eval_command  # noqa: E402

_register_eval_command(app)

from services.cli import register as _register_serving_commands  # noqa: E402  (serving builds on the engine)

_register_serving_commands(app)
