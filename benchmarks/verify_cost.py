"""Cost of one target forward vs the number of tokens it verifies, and of one drafter LM-head pass.

Tells how large a tree pays on a given machine: speculative decoding gains when tau exceeds the cost ratio.
Usage: python benchmarks/verify_cost.py [--dtype auto] [--out results/engine/verify_cost.md]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import typer
from transformers import DynamicCache

from taps_engine import load_target
from taps_engine.fileio import atomic_write


def median_ms(run, reps: int, setup=lambda: None) -> float:
    """Median wall time of `run(setup())` in ms; setup (e.g. a prefill) is not timed."""
    times = []
    for _ in range(reps):
        state = setup()
        start = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(dtype: str = "auto", context: int = 200, reps: int = 7,
         out: Path = Path("results/engine/verify_cost.md")) -> None:
    target = load_target(dtype=dtype)
    model, decoder, lm_head = target.model, target.model.get_decoder(), target.model.get_output_embeddings()
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (1, context), device=target.device)

    def prefilled() -> DynamicCache:
        cache = DynamicCache(config=model.config)
        decoder(prompt, cache=cache)
        return cache

    def verify_ms(n: int) -> float:
        ids = torch.randint(0, vocab, (1, n), device=target.device)
        return median_ms(lambda cache: lm_head(decoder(ids, cache=cache).last_hidden_state), reps, prefilled)

    with torch.inference_mode():
        base = verify_ms(1)
        rows = [f"| {n} | {ms:.1f} | {ms / base:.2f} |" for n in (1, 2, 4, 8, 16, 32, 60)
                for ms in [base if n == 1 else verify_ms(n)]]
        hidden = torch.randn(4, model.config.hidden_size, device=target.device, dtype=target.dtype)
        head_ms = median_ms(lambda _: lm_head(hidden), reps)
    text = "\n".join([
        f"Command: `python benchmarks/verify_cost.py --dtype {dtype} --context {context} --reps {reps}`", "",
        f"Target {target.name} ({str(target.dtype).replace('torch.', '')}, {target.device}), {context}-token "
        f"context, median of {reps}.", "",
        "| tokens verified in one forward | ms (body + LM head) | x one token |", "|---|---|---|", *rows, "",
        f"One drafter LM-head pass over 4 frontier nodes (full vocabulary): {head_ms:.1f} ms "
        f"({head_ms / base:.2f} x one target token).", ""])
    atomic_write(out, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    typer.run(main)
