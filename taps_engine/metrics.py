"""Acceptance metrics over generation results, named after what they count."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from .decoding import GenerationResult


def mean_acceptance_length(results: Iterable[GenerationResult]) -> float:
    """Micro τ: tokens committed by verify steps / verify steps, over all results."""
    steps = [s for r in results for s in r.steps]
    return sum(s.acceptance_length for s in steps) / len(steps) if steps else 0.0


def per_sample_acceptance_length(results: Iterable[GenerationResult]) -> float:
    """Macro τ: the mean of each result's own τ (results without steps are skipped)."""
    taus = [r.tau for r in results if r.steps]
    return sum(taus) / len(taus) if taus else 0.0


def depth_counts(results: Iterable[GenerationResult]) -> tuple[Counter, Counter]:
    """Per draft depth d: steps whose tree reached d with depth d-1 accepted, and of those, steps accepting d."""
    reached, accepted = Counter(), Counter()
    for r in results:
        for s in r.steps:
            tree_depth = max(s.node_depth, default=0)
            for d in range(1, min(s.accepted + 1, tree_depth) + 1):
                reached[d] += 1
                accepted[d] += s.accepted >= d
    return reached, accepted


def acceptance_rate_by_depth(results: Iterable[GenerationResult]) -> dict[int, float]:
    """P(draft at depth d accepted | depth d-1 accepted and the tree reached depth d), per depth d."""
    reached, accepted = depth_counts(results)
    return {d: accepted[d] / reached[d] for d in sorted(reached)}


def drafter_step_counts(results: Iterable[GenerationResult]) -> tuple[Counter, int]:
    """Verify steps that used each drafter (merged steps count for every drafter in them), and all steps."""
    counts, steps = Counter(), 0
    for r in results:
        for s in r.steps:
            steps += 1
            counts.update(set(s.drafters))
    return counts, steps


def drafter_selection_shares(results: Iterable[GenerationResult]) -> dict[str, float]:
    """Fraction of verify steps that used each drafter."""
    counts, steps = drafter_step_counts(results)
    return {name: n / steps for name, n in sorted(counts.items())} if steps else {}


def node_values(results: Iterable[GenerationResult]) -> dict[str, dict[str, list[float]]]:
    """Draft confidence and entropy of every verified node, grouped by whether the target accepted it."""
    values = {k: {"confidence": [], "entropy": []} for k in ("accepted", "rejected")}
    for r in results:
        for s in r.steps:
            for conf, ent, ok in zip(s.node_confidence, s.node_entropy, s.node_accepted):
                bucket = values["accepted" if ok else "rejected"]
                bucket["confidence"].append(conf)
                bucket["entropy"].append(ent)
    return values


def node_statistics(results: Iterable[GenerationResult]) -> dict[str, dict[str, float]]:
    """Mean draft confidence and entropy of accepted vs rejected draft nodes."""
    return {k: {"confidence": sum(v["confidence"]) / len(v["confidence"]) if v["confidence"] else 0.0,
                "entropy": sum(v["entropy"]) / len(v["entropy"]) if v["entropy"] else 0.0,
                "count": len(v["confidence"])}
            for k, v in node_values(results).items()}


def summarize(results: list[GenerationResult]) -> dict:
    return {
        "tau": mean_acceptance_length(results),
        "tau_macro": per_sample_acceptance_length(results),
        "n_steps": sum(len(r.steps) for r in results),
        "new_tokens": sum(len(r.token_ids) for r in results),
        "acceptance_rate_by_depth": acceptance_rate_by_depth(results),
        "drafter_selection_shares": drafter_selection_shares(results),
        "nodes": node_statistics(results),
    }
