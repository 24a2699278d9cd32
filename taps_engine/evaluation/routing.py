"""The routing questions: how much of an oracle router's gain a signal gets, and how well confidence and entropy
separate the draft nodes the target accepts from those it rejects at each depth.

Oracle: in replay the continuation is known, so at every step of a run whose drafters all draft (confidence,
entropy, merged trees) each drafter's own tree is judged too (`StepRecord.candidate_accepted`). On the same steps
the oracle takes the best tree of each step and a fixed drafter always its own; a signal's share of the oracle gain
is (τ chosen − τ of the best fixed drafter) / (τ oracle − τ of the best fixed drafter). These are per-step views of
one run's positions, not separate decodings.

Separation: per draft depth, the binned confidence and entropy of accepted and rejected nodes (every verified node
of the depth) give an AUC: the probability that an accepted node scores higher than a rejected one (lower, for
entropy), ties (same bin) counting half. Depth confounds both signals (deep nodes are less confident and less
often accepted), hence one AUC per depth.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from ..decoding import GenerationResult

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 21)
ENTROPY_BINS = np.linspace(0.0, 10.0, 21)   # nats; larger values land in the last bin


def histogram(values: list[float], bins: np.ndarray) -> list[int]:
    clipped = np.clip(np.asarray(values, dtype=float), bins[0], bins[-1])
    return np.histogram(clipped, bins=bins)[0].tolist()


def oracle_counts(results: list[GenerationResult]) -> dict | None:
    """Tokens per step the run committed, each drafter's own tree and the per-step best of them would have, summed
    over the steps whose candidates were judged (None: none were, e.g. a single drafter or live decoding)."""
    judged = [s for r in results for s in r.steps if s.candidate_accepted]
    if not judged:
        return None
    drafters = Counter()
    for s in judged:
        drafters.update({name: n + 1 for name, n in s.candidate_accepted.items()})
    return {"steps": len(judged), "chosen": sum(s.accepted + 1 for s in judged),
            "oracle": sum(max(s.candidate_accepted.values()) + 1 for s in judged), "drafters": dict(drafters)}


def nodes_by_depth(results: list[GenerationResult]) -> dict[str, dict]:
    """Per depth: binned confidence and entropy of the accepted and the rejected draft nodes."""
    values: dict[int, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: {k: {"confidence": [], "entropy": []} for k in ("accepted", "rejected")})
    for r in results:
        for s in r.steps:
            for depth, conf, ent, ok in zip(s.node_depth, s.node_confidence, s.node_entropy, s.node_accepted):
                bucket = values[depth]["accepted" if ok else "rejected"]
                bucket["confidence"].append(conf)
                bucket["entropy"].append(ent)
    return {str(d): {kind: {"confidence": histogram(v["confidence"], CONFIDENCE_BINS),
                            "entropy": histogram(v["entropy"], ENTROPY_BINS)} for kind, v in by_kind.items()}
            for d, by_kind in sorted(values.items())}


def _zero_histograms() -> dict[str, dict[str, list[int]]]:
    return {kind: {"confidence": [0] * (len(CONFIDENCE_BINS) - 1), "entropy": [0] * (len(ENTROPY_BINS) - 1)}
            for kind in ("accepted", "rejected")}


def _add_histograms(total: dict, by_kind: dict) -> None:
    for kind, stats in by_kind.items():
        for stat, h in stats.items():
            total[kind][stat] = [a + b for a, b in zip(total[kind][stat], h)]


def node_totals(recs: list[dict]) -> dict[str, dict[str, list[int]]]:
    """Accepted vs rejected node histograms over every depth and record. Records carry them per depth only
    (their sum over depths is the total); records written before that carry the total as `nodes`."""
    total = _zero_histograms()
    for r in recs:
        for by_kind in ([r["nodes"]] if "nodes" in r else r.get("nodes_by_depth", {}).values()):
            _add_histograms(total, by_kind)
    return total


def auc(positive: list[int], negative: list[int]) -> float | None:
    """P(a positive's bin is above a negative's) + half P(same bin), from two histograms over the same bins."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if pos.sum() == 0 or neg.sum() == 0:
        return None
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])   # negatives in lower bins than each bin
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


def _summed_histograms(recs: list[dict]) -> dict[str, dict]:
    total: dict[str, dict] = {}
    for r in recs:
        for depth, by_kind in r.get("nodes_by_depth", {}).items():
            _add_histograms(total.setdefault(depth, _zero_histograms()), by_kind)
    return total


def separation(recs: list[dict]) -> list[dict]:
    """Per depth: node counts and the AUCs of confidence (higher = accepted) and entropy (lower = accepted)."""
    rows = []
    for depth, h in sorted(_summed_histograms(recs).items(), key=lambda kv: int(kv[0])):
        acc, rej = h["accepted"], h["rejected"]
        entropy_auc = auc(rej["entropy"], acc["entropy"])   # accepted nodes having the lower entropy
        rows.append({"depth": int(depth), "accepted": sum(acc["confidence"]), "rejected": sum(rej["confidence"]),
                     "confidence_auc": auc(acc["confidence"], rej["confidence"]),
                     "entropy_auc": entropy_auc})
    return rows


def oracle_summary(recs: list[dict]) -> dict | None:
    """τ chosen, per fixed drafter and per-step oracle on the judged steps of these records, and the share of the
    oracle's gain over the best fixed drafter that the run's choice got."""
    judged = [r["oracle"] for r in recs if r.get("oracle")]
    if not judged:
        return None
    steps = sum(o["steps"] for o in judged)
    drafters = Counter()
    for o in judged:
        drafters.update(o["drafters"])
    tau = {name: n / steps for name, n in sorted(drafters.items())}
    chosen, oracle = sum(o["chosen"] for o in judged) / steps, sum(o["oracle"] for o in judged) / steps
    best = max(tau.values())
    gain = oracle - best
    return {"steps": steps, "tau_chosen": round(chosen, 4), "tau_oracle": round(oracle, 4),
            "tau_drafters": {k: round(v, 4) for k, v in tau.items()}, "best_fixed": round(best, 4),
            "share_of_oracle_gain": round((chosen - best) / gain, 3) if gain > 0 else None}
