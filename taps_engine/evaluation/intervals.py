"""Bootstrap intervals over prompts: how sure a τ, or a difference of two runs' τ, is.

τ is a ratio of sums over prompts (tokens committed / verification steps), so prompts are the unit resampled:
each replicate draws as many prompts as the sample holds, with replacement, and recomputes the ratio. A
difference between two runs resamples the same prompts for both (paired), which removes the prompt-to-prompt
variation they share. Percentile intervals, 95%, a fixed seed so reports are reproducible. At T>0 with several
sampling seeds per prompt, a prompt's samples are drawn together (a cluster bootstrap): they share the prompt, so
treating them as independent units would make the interval too narrow.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

REPLICATES = 2000
LEVEL = 0.95


def _ratio(committed: np.ndarray, steps: np.ndarray, draws: np.ndarray) -> np.ndarray:
    return committed[draws].sum(axis=1) / np.maximum(steps[draws].sum(axis=1), 1)


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return round(float(lo), 4), round(float(hi), 4)


def _draws(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(REPLICATES, n))


def ratio_interval(numerators: list[float], denominators: list[float], seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of sum(numerators) / sum(denominators), the units (prompts) resampled."""
    if len(numerators) < 2:
        return None
    return _interval(_ratio(np.array(numerators, dtype=float), np.array(denominators, dtype=float),
                            _draws(len(numerators), seed)))


def paired_ratio(a: tuple[list[float], list[float]], b: tuple[list[float], list[float]], seed: int = 0
                 ) -> dict | None:
    """(sum(b's numerators) / sum(b's denominators)) / (the same for a), e.g. tokens per second of two methods on
    the same prompts, with its paired 95% interval: the same prompts are drawn for both."""
    if len(a[0]) < 2:
        return None
    (na, da), (nb, db) = ((np.array(x, dtype=float) for x in side) for side in (a, b))
    draws, whole = _draws(len(na), seed), np.arange(len(na))[None]
    ratio = lambda d: (nb[d].sum(axis=1) / db[d].sum(axis=1)) / (na[d].sum(axis=1) / da[d].sum(axis=1))
    return {"ratio": round(float(ratio(whole)[0]), 4), "ci": list(_interval(ratio(draws))), "n_prompts": len(na)}


def prompt_key(rec: dict) -> tuple:
    """The prompt a record samples: the T>0 samples of one prompt are items `id`, `id~1`, `id~2`, ... (the
    runner's `sample_ids`)."""
    return rec.get("benchmark"), rec["item"].split("~", 1)[0]


def _per_prompt(recs: list[dict]) -> tuple[list[int], list[int]]:
    """Committed tokens and steps summed over each prompt's samples, prompts in order of first appearance."""
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for r in recs:
        total = sums[prompt_key(r)]
        total[0] += r["committed"]
        total[1] += r["n_steps"]
    return [c for c, _ in sums.values()], [n for _, n in sums.values()]


def tau_interval(recs: list[dict], seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of τ over the prompts of `recs` (records with `committed` and `n_steps`)."""
    return ratio_interval(*_per_prompt(recs), seed)


def paired_difference(a: list[dict], b: list[dict], seed: int = 0) -> dict | None:
    """τ(b) − τ(a) on the samples both hold (matched by benchmark and item), with its paired 95% interval over
    their prompts."""
    key = lambda r: (r["benchmark"], r["item"])
    first = {key(r): r for r in a}
    shared = [(first[key(r)], r) for r in b if key(r) in first]
    sums = {side: _per_prompt([pair[i] for pair in shared]) for i, side in enumerate(("a", "b"))}
    prompts = len(sums["a"][0])
    if prompts < 2:
        return None
    arrays = {side: tuple(np.array(v, dtype=float) for v in values) for side, values in sums.items()}
    draws = _draws(prompts, seed)
    diffs = _ratio(*arrays["b"], draws) - _ratio(*arrays["a"], draws)
    whole = np.arange(prompts)[None]
    diff = float(_ratio(*arrays["b"], whole)[0] - _ratio(*arrays["a"], whole)[0])
    lo, hi = _interval(diffs)
    return {"difference": round(diff, 4), "ci": [lo, hi], "n_prompts": prompts, "n_samples": len(shared),
            "excludes_zero": lo > 0 or hi < 0}
