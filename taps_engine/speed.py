"""Side-by-side speed benchmark in one process: transformers' plain and prompt-lookup decoding vs the engine."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .decoding import Decoder, PlainDecoder
from .metrics import mean_acceptance_length
from .eval_sets import benchmark_prompts
from .target import Target

FALLBACK_PROMPTS = [
    "Explain in a few sentences why the sky is blue.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a short poem about the sea.",
    "A train travels 60 km in 1.5 hours. What is its average speed in km/h?",
]


def bench_prompts(n: int) -> list[str]:
    """Alternating MT-Bench first turns and GSM8K test questions from the data dir (fixed prompts without it)."""
    try:
        chat, math = benchmark_prompts("mt_bench", n), benchmark_prompts("gsm8k", n)
    except ValueError as e:
        warnings.warn(f"{e}; using built-in prompts")
        return [FALLBACK_PROMPTS[i % len(FALLBACK_PROMPTS)] for i in range(n)]
    return [p for pair in zip(chat, math) for p in pair][:n]


@dataclass
class MethodResult:
    name: str
    new_tokens: int
    seconds: float
    outputs: list[list[int]]
    tau: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


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


def _hf_runner(target: Target, max_new_tokens: int, prompt_lookup: bool = False) -> Callable[[list[int]], list[int]]:
    return lambda ids: hf_generate(target, ids, max_new_tokens, prompt_lookup=prompt_lookup)


def run_speed_bench(target: Target, engine: Decoder, prompts: list[str], max_new_tokens: int,
                    progress: Callable[[str], None] = lambda _: None) -> dict:
    """Greedy decoding of the same prompts by every method, interleaved per prompt so machine noise is shared."""
    ids = [target.encode_prompt([{"role": "user", "content": p}]) for p in prompts]
    plain = PlainDecoder(target)
    engine_results = []

    def engine_run(x: list[int]) -> list[int]:
        result = engine.generate(x, max_new_tokens=max_new_tokens)
        engine_results.append(result)
        return result.token_ids

    methods: dict[str, Callable[[list[int]], list[int]]] = {
        "transformers generate": _hf_runner(target, max_new_tokens),
        "transformers prompt-lookup": _hf_runner(target, max_new_tokens, prompt_lookup=True),
        "engine plain": lambda x: plain.generate(x, max_new_tokens=max_new_tokens).token_ids,
        f"engine {engine.policy.name}": engine_run,
    }
    for run in methods.values():  # warm-up
        run(ids[0][:16])
    engine_results.clear()
    results = {name: MethodResult(name, 0, 0.0, []) for name in methods}
    with torch.inference_mode():
        for i, x in enumerate(ids):
            progress(f"prompt {i + 1}/{len(ids)}")
            for name, run in methods.items():
                start = time.perf_counter()
                out = run(x)
                results[name].seconds += time.perf_counter() - start
                results[name].new_tokens += len(out)
                results[name].outputs.append(out)
    results[f"engine {engine.policy.name}"].tau = mean_acceptance_length(engine_results)
    base = results["transformers generate"]
    lookup = results["transformers prompt-lookup"]
    rows = [{"method": r.name, "new_tokens": r.new_tokens, "seconds": round(r.seconds, 3),
             "tokens_per_s": round(r.tokens_per_s, 2),
             "speedup_vs_generate": round(r.tokens_per_s / base.tokens_per_s, 3),
             "speedup_vs_prompt_lookup": round(r.tokens_per_s / lookup.tokens_per_s, 3),
             "same_output_as_generate": sum(a == b for a, b in zip(r.outputs, base.outputs)),
             "tau": r.tau} for r in results.values()]
    return {"target": target.name, "dtype": str(target.dtype).replace("torch.", ""), "device": str(target.device),
            "n_prompts": len(prompts), "max_new_tokens": max_new_tokens, "policy": engine.policy.name,
            "drafters": list(engine.drafters), "tree": asdict(engine.tree),
            "rows": rows}


def report_markdown(report: dict, command: str) -> str:
    """The benchmark table as Markdown, with the command and settings that produced it."""
    lines = [f"Command: `{command}`", "",
             f"Target {report['target']} ({report['dtype']}, {report['device']}), {report['n_prompts']} prompts "
             f"(MT-Bench and GSM8K alternating), greedy, max {report['max_new_tokens']} new tokens; engine policy "
             f"`{report['policy']}` with drafters {', '.join(report['drafters']) or 'none'}, tree {report['tree']}.",
             "", "| method | tokens/s | x generate | x prompt-lookup | same output as generate | tau |",
             "|---|---|---|---|---|---|"]
    for row in report["rows"]:
        tau = "" if row["tau"] is None else f"{row['tau']:.2f}"
        lines.append(f"| {row['method']} | {row['tokens_per_s']:.2f} | {row['speedup_vs_generate']:.2f} | "
                     f"{row['speedup_vs_prompt_lookup']:.2f} | {row['same_output_as_generate']}/{report['n_prompts']} "
                     f"| {tau} |")
    return "\n".join(lines) + "\n"
