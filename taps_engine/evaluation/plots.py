"""The study's figures as PNG files, drawn from the flat records (T=0 unless the run has only T>0)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from ..fileio import atomic_write  # noqa: E402
from .config import AVERAGE  # noqa: E402
from .report import COLUMN_NAMES  # noqa: E402
from .routing import CONFIDENCE_BINS, ENTROPY_BINS  # noqa: E402
from .runner import Run  # noqa: E402

PLOTS = ("acceptance_by_depth", "node_confidence_entropy", "selection_share", "average_sweep", "merged_nodes")


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def _at(rows: list[dict], temperature: float) -> list[dict]:
    return [r for r in rows if r["temperature"] == temperature and r["tau"] is not None]


def _mean_tau(rows: list[dict], run_id: str) -> float | None:
    taus = [r["tau"] for r in rows if r["run"] == run_id]
    return sum(taus) / len(taus) if taus else None


def acceptance_by_depth(rows: list[dict], runs: list[Run], benchmarks: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4 * len(benchmarks), 3.4), sharey=True, squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        for run in runs:
            row = next((r for r in rows if r["run"] == run.id and r["benchmark"] == bench), None)
            if row is None or run.policy in ("plain", AVERAGE) or not row["acceptance_rate_by_depth"]:
                continue
            depths = sorted(row["acceptance_rate_by_depth"], key=int)
            ax.plot([int(d) for d in depths], [row["acceptance_rate_by_depth"][d] for d in depths], marker="o",
                    label=run.label)
        ax.set_title(COLUMN_NAMES[bench])
        ax.set_xlabel("draft depth")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("acceptance rate | previous depth accepted")
    axes[0][-1].legend(fontsize=6, loc="upper right")
    _save(fig, path)


def node_confidence_entropy(rows: list[dict], path: Path) -> None:
    """Are accepted drafts the confident, low-entropy ones? (the signal confidence routing relies on)"""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, stat, bins in ((axes[0], "confidence", CONFIDENCE_BINS), (axes[1], "entropy", ENTROPY_BINS)):
        for kind in ("accepted", "rejected"):
            counts = np.sum([r["nodes"][kind][stat] for r in rows if r["nodes"][kind][stat]], axis=0)
            if np.ndim(counts) == 0 or counts.sum() == 0:
                continue
            ax.stairs(counts / counts.sum(), bins, label=f"{kind} ({int(counts.sum())} nodes)", fill=False)
        ax.set_xlabel(f"draft {stat}" + (" (nats)" if stat == "entropy" else " (path probability)"))
        ax.set_ylabel("share of nodes")
        ax.legend(fontsize=7)
    _save(fig, path)


def selection_share(rows: list[dict], runs: list[Run], benchmarks: list[str], path: Path) -> None:
    routed = [r for r in runs if r.policy in ("confidence", "entropy")]
    fig, axes = plt.subplots(1, max(len(routed), 1), figsize=(4.5 * max(len(routed), 1), 3.4), squeeze=False)
    for ax, run in zip(axes[0], routed):
        mine = {r["benchmark"]: r["selection_share"] for r in rows if r["run"] == run.id}
        names = sorted({n for shares in mine.values() for n in shares})
        bottom = np.zeros(len(benchmarks))
        for name in names:
            share = np.array([mine.get(b, {}).get(name) or 0.0 for b in benchmarks])
            ax.bar([COLUMN_NAMES[b] for b in benchmarks], share, bottom=bottom, label=name)
            bottom += share
        ax.set_title(f"{run.label}")
        ax.set_ylabel("share of verify steps")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    _save(fig, path)


def average_sweep(rows: list[dict], runs: list[Run], benchmarks: list[str], path: Path) -> None:
    """τ along the weight interpolation, one panel per pair of parents; alpha 0 and 1 are the parents' own rows."""
    pairs = sorted({r.drafter for r in runs if r.policy == AVERAGE})
    panels = max(1, len(pairs))   # an empty panel when the experiment averages nothing
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.6), sharey=True, squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        a, b = pair.split("+")
        points = {0.0: a, 1.0: b, **{r.alpha: r.id for r in runs if r.policy == AVERAGE and r.drafter == pair}}
        for bench in benchmarks + ["average"]:
            xs, ys = [], []
            for alpha, rid in sorted(points.items()):
                mine = [r for r in rows if r["run"] == rid and (bench == "average" or r["benchmark"] == bench)]
                if mine and (bench != "average" or len(mine) == len(benchmarks)):
                    xs.append(alpha)
                    ys.append(sum(r["tau"] for r in mine) / len(mine))
            ax.plot(xs, ys, marker="o", linewidth=2.5 if bench == "average" else 1,
                    label=f"{'Average' if bench == 'average' else COLUMN_NAMES[bench]}")
        ax.set_xlabel(f"alpha  ({a} = 0, {b} = 1)", fontsize=8)
    axes[0][0].set_ylabel("τ")
    if pairs:
        axes[0][0].legend(fontsize=7)
    _save(fig, path)


def merged_nodes(rows: list[dict], runs: list[Run], path: Path) -> None:
    """τ against the draft nodes actually verified per step: what each merge buys for its verification cost."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        if not (run.policy.startswith("merged") or run.policy == "single"):
            continue
        mine = [r for r in rows if r["run"] == run.id]
        if not mine:
            continue
        nodes = sum(r["mean_verified_nodes"] for r in mine) / len(mine)
        ax.scatter(nodes, _mean_tau(mine, run.id), marker="s" if run.policy == "single" else "o")
        ax.annotate(run.label, (nodes, _mean_tau(mine, run.id)), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    ax.margins(x=0.5, y=0.15)   # room for the labels
    ax.set_xlabel("draft nodes verified per step")
    ax.set_ylabel("τ (mean over benchmarks)")
    _save(fig, path)


def draw_all(rows: list[dict], runs: list[Run], benchmarks: list[str], out_dir: Path) -> list[Path]:
    temperature = 0.0 if any(r["temperature"] == 0 for r in rows) else min(r["temperature"] for r in rows)
    at = _at(rows, temperature)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / f"{name}.png" for name in PLOTS}
    acceptance_by_depth(at, runs, benchmarks, paths["acceptance_by_depth"])
    node_confidence_entropy([r for r in at if r["policy"] not in ("plain",)], paths["node_confidence_entropy"])
    selection_share(at, runs, benchmarks, paths["selection_share"])
    average_sweep(at, runs, benchmarks, paths["average_sweep"])
    merged_nodes(at, runs, paths["merged_nodes"])
    return list(paths.values())
