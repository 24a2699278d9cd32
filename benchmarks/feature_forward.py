"""What bounds feature caching on a CPU: the target's forwards over real training sequences, batched exactly as
`taps features` batches them, under each attention implementation (alternated A B C A B C so a machine's drift
hits all alike), with the time spent in the linear layers' matrix multiplies read off the profiler.

The linear layers do the same work whatever the attention, so tokens / (their seconds) is the rate no attention
kernel can beat on this CPU. They are profiled under eager attention, whose attention products are all bmm (under
sdpa the profiler also counts matrix products inside the attention call as aten::mm). `taps-causal-chunks` is what
`taps features` runs (training/causal_attention.py, since round 13); `sdpa` is what it ran before. `sdpa-masked` is
sdpa handed an explicit causal mask, as it was while `taps features` passed a padding mask (to round 11): with a
mask, the CPU kernel computes the blocks above the diagonal too.

Usage: python benchmarks/feature_forward.py --config configs/smollm2/eagle2-chat.yaml --examples 48 --threads 2
Writes results/training/feature-forward.md.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch
import typer
from torch.profiler import profile

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from taps_engine.fileio import write_report

MASKED = "sdpa-masked"


def linear_work(run: callable) -> tuple[float, float]:
    """Seconds and FLOPs the profiler attributes to aten::mm and addmm: the projections and the MLP."""
    with profile(with_flops=True) as prof:
        run()
    linear = [e for e in prof.key_averages() if e.key in ("aten::mm", "aten::addmm")]
    return sum(e.self_cpu_time_total for e in linear) / 1e6, sum(e.flops for e in linear)


def square_matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of one large square matmul in `dtype`: what this CPU's math library reaches at its best shape."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def main(config: Path = Path("configs/smollm2/eagle2-chat.yaml"), examples: int = 48, threads: int = 2,
         repeats: int = 3, out: Path = Path("results/training/feature-forward.md")) -> None:
    from taps_engine import load_target
    from taps_engine.costs import machine_line
    from taps_engine.padding import PADDED_TOKENS
    from training.causal_attention import NAME
    from training.config import load_config
    from training.data import RENDERERS, build_dataset
    from training.features import final_hidden_states

    torch.set_num_threads(threads)
    AttentionInterface.register(MASKED, sdpa_attention_forward)
    AttentionMaskInterface.register(MASKED, partial(sdpa_mask, allow_is_causal_skip=False))
    cfg = load_config(config)
    d = cfg.data.capped(examples)
    data, _ = build_dataset(d.kind, d.n_math, d.n_chat, d.seed, math_path=d.math_path, chat_path=d.chat_path)
    target = load_target(cfg.target, dtype=cfg.dtype)
    render = RENDERERS[d.text]
    sequences = [ids for ids, mask in (render(target.tokenizer, m, d.max_length) for m in data) if sum(mask)]
    tokens = sum(map(len, sequences))
    implementations = [NAME, "sdpa", MASKED, "eager"]
    seconds: dict[str, list[float]] = {name: [] for name in implementations}
    for name in implementations:  # warm-up runs
        target.model.set_attn_implementation(name)
        final_hidden_states(target, sequences, PADDED_TOKENS)
    target.model.set_attn_implementation("eager")
    mm_s, flops = linear_work(lambda: final_hidden_states(target, sequences, PADDED_TOKENS))
    for _ in range(repeats):
        for name in implementations:
            target.model.set_attn_implementation(name)
            start = time.perf_counter()
            final_hidden_states(target, sequences, PADDED_TOKENS)
            seconds[name].append(time.perf_counter() - start)
    dtype = next(target.model.parameters()).dtype
    lines = [f"Command: `python benchmarks/feature_forward.py --config {config} --examples {examples} --threads "
             f"{threads} --repeats {repeats}`", "", f"Machine: {machine_line()}.", "",
             f"{len(sequences)} sequences of {cfg.name}'s data ({tokens} tokens, max length {d.max_length}), "
             f"{str(dtype).removeprefix('torch.')}, batches of at most {PADDED_TOKENS:,} padded tokens as `taps "
             f"features` forms them; each implementation run {repeats} times, alternating (tok/s of the mean, then "
             f"the fastest). The linear layers (aten::mm in one profiled run under eager attention) took {mm_s:.2f} s "
             f"at {flops / mm_s / 1e9:.0f} GFLOP/s, against {square_matmul_rate(dtype):.0f} GFLOP/s for a "
             f"2048x2048x2048 matmul in the same dtype here: no attention kernel can take feature caching past "
             f"{tokens / mm_s:.0f} tok/s on this CPU.", "",
             "| attention | tok/s (mean) | tok/s (fastest) | x sdpa |", "|---|---|---|---|"]
    base = sum(seconds["sdpa"]) / repeats
    for name in implementations:
        mean = sum(seconds[name]) / repeats
        lines.append(f"| {name} | {tokens / mean:.0f} | {tokens / min(seconds[name]):.0f} | {base / mean:.2f} |")
    write_report(out, lines)


if __name__ == "__main__":
    typer.run(main)
