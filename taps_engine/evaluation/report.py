"""From per-prompt records to the paper's layout: flat records, τ tables per temperature, accuracy and speed."""

from __future__ import annotations

from collections import Counter

from ..eval_sets import BenchmarkItem
from .intervals import paired_difference, prompt_key, tau_interval
from .routing import node_totals, oracle_summary, separation
from .runner import Run, record_key, sample_ids

COLUMN_NAMES = {"mt_bench": "MT-Bench", "gsm8k": "GSM8K", "math500": "MATH-500", "svamp": "SVAMP"}
BASELINE_IDS = {"generate": "hf-generate", "prompt-lookup": "hf-prompt-lookup"}


def _rate(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def _summed(recs: list[dict], field: str) -> Counter:
    total = Counter()
    for r in recs:
        total.update(r[field])
    return total


def _prompts(recs: list[dict]) -> int:
    """Distinct prompts among `recs` (a prompt's T>0 samples are one unit of the intervals)."""
    return len({prompt_key(r) for r in recs})


def _row(run: Run, temperature: float, benchmark: str, recs: list[dict]) -> dict:
    steps, committed = sum(r["n_steps"] for r in recs), sum(r["committed"] for r in recs)
    new_tokens, seconds = sum(r["new_tokens"] for r in recs), sum(r["seconds"] for r in recs)
    reached, accepted = _summed(recs, "depth_reached"), _summed(recs, "depth_accepted")
    selections = _summed(recs, "selections")
    graded = [r["correct"] for r in recs if r["correct"] is not None]
    return {
        "run": run.id, "label": run.label, "method": run.method, "drafter": run.drafter, "policy": run.policy,
        "alpha": run.alpha, "temperature": temperature, "benchmark": benchmark,
        "tau": _rate(committed, steps) if not run.is_baseline else None,
        "tau_ci": tau_interval(recs) if not run.is_baseline else None,
        "n_prompts": _prompts(recs), "n_samples": len(recs), "n_steps": steps, "new_tokens": new_tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": _rate(new_tokens, seconds),
        "accuracy": _rate(sum(graded), len(graded)) if graded else None,
        "mean_verified_nodes": _rate(sum(r["verified_nodes"] for r in recs), steps),
        "acceptance_rate_by_depth": {d: _rate(accepted[d], reached[d]) for d in sorted(reached, key=int)},
        "selection_share": {k: _rate(v, steps) for k, v in sorted(selections.items())},
        "nodes": node_totals(recs),
        "oracle": oracle_summary(recs),
    }


def _same_tokens(a: dict, b: dict) -> bool:
    return [t["token_ids"] for t in a["turns"]] == [t["token_ids"] for t in b["turns"]]


def _records(records: dict[tuple, dict], run: str, temperature: float, benchmark: str, items: list[BenchmarkItem],
             seeds: int) -> list[dict]:
    """The stored records of a run's cell: each prompt, and at T>0 each of its samples."""
    keys = (record_key(run, temperature, benchmark, sample) for i in items
            for sample in sample_ids(i.id, temperature, seeds))
    return [records[k] for k in keys if k in records]


def aggregate(runs: list[Run], records: dict[tuple, dict], items: dict[str, list[BenchmarkItem]],
              seeds: int = 1) -> list[dict]:
    """One flat record per (run, temperature, benchmark) over the prompts (and samples) of the current config."""
    rows = []
    for run in runs:
        for temperature in run.temperatures:
            for benchmark, its in items.items():
                recs = _records(records, run.id, temperature, benchmark, its, seeds)
                if not recs:
                    continue
                row = _row(run, temperature, benchmark, recs)
                plain = [records.get(record_key("plain", temperature, benchmark, r["item"])) for r in recs]
                if temperature == 0 and all(plain):
                    row["same_as_plain"] = sum(_same_tokens(r, p) for r, p in zip(recs, plain))
                rows.append(row)
    by_key = {(r["run"], r["temperature"], r["benchmark"]): r for r in rows}
    for row in rows:
        for name, rid in BASELINE_IDS.items():
            base = by_key.get((rid, row["temperature"], row["benchmark"]))
            ok = base and base["n_samples"] == row["n_samples"] and base["tokens_per_s"] and row["tokens_per_s"]
            row[f"speedup_vs_{name.replace('-', '_')}"] = round(row["tokens_per_s"] / base["tokens_per_s"], 3) \
                if ok else None
    return rows


def tau_tables(rows: list[dict], runs: list[Run], benchmarks: list[str]) -> dict[str, dict]:
    """Per temperature: rows = drafter/policy, columns = benchmarks + Average (the paper's layout)."""
    columns = [COLUMN_NAMES[b] for b in benchmarks] + ["Average"]
    tables = {}
    for temperature in sorted({r["temperature"] for r in rows}):
        table_rows = []
        for run in runs:
            if not run.drafts:
                continue
            mine = {r["benchmark"]: r for r in rows if r["run"] == run.id and r["temperature"] == temperature}
            if not mine:
                continue
            values = {COLUMN_NAMES[b]: mine[b]["tau"] if b in mine else None for b in benchmarks}
            present = [v for v in values.values() if v is not None]
            values["Average"] = round(sum(present) / len(present), 4) if len(present) == len(benchmarks) else None
            intervals = {COLUMN_NAMES[b]: mine[b]["tau_ci"] for b in benchmarks if b in mine}
            table_rows.append({"run": run.id, "label": run.label, "method": run.method, "policy": run.policy,
                               **values, "ci": intervals})
        tables[f"{temperature:g}"] = {"temperature": temperature, "columns": columns, "rows": table_rows}
    return tables


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in body), ""]


def _with_interval(value: float | None, ci: list[float] | None, bold: bool) -> str:
    text = f"**{_fmt(value)}**" if bold else _fmt(value)
    return f"{text} ({ci[0]:.2f}–{ci[1]:.2f})" if ci else text


def tau_markdown(tables: dict[str, dict]) -> list[str]:
    lines = []
    for key, table in tables.items():
        lines += [f"### Mean acceptance length τ, T={key}", "", "In parentheses: 95% bootstrap interval over prompts.",
                  ""]
        best = {c: max((r[c] for r in table["rows"] if r[c] is not None), default=None) for c in table["columns"]}
        body = [[r["method"], r["label"], *(_with_interval(r[c], r["ci"].get(c), r[c] is not None and r[c] == best[c])
                                            for c in table["columns"])] for r in table["rows"]]
        lines += _markdown_table(["method", "drafter / policy", *table["columns"]], body)
    return lines


def comparisons(pairs: list[tuple[str, str]], runs: list[Run], records: dict[tuple, dict],
                items: dict[str, list[BenchmarkItem]], seeds: int = 1) -> list[dict]:
    """Each pair (A, B) of run ids: τ(B) − τ(A) per temperature, per benchmark and over all of them, with paired
    bootstrap intervals."""
    ids = {r.id: r for r in runs}
    unknown = sorted({x for pair in pairs for x in pair if x not in ids})
    if unknown:
        raise ValueError(f"comparisons name unknown run ids {unknown}; runs: {', '.join(ids)}")
    out = []
    for a, b in pairs:
        for temperature in sorted(set(ids[a].temperatures) & set(ids[b].temperatures)):
            picked = {run: {bench: _records(records, run, temperature, bench, its, seeds)
                            for bench, its in items.items()} for run in (a, b)}
            for bench in [*items, "all"]:
                recs = {run: sum(picked[run].values(), []) if bench == "all" else picked[run][bench] for run in (a, b)}
                result = paired_difference(recs[a], recs[b])
                if result is not None:
                    out.append({"a": a, "b": b, "temperature": temperature, "benchmark": bench, **result})
    return out


def comparison_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    body = [[f"{r['b']} − {r['a']}", f"{r['temperature']:g}", COLUMN_NAMES.get(r["benchmark"], r["benchmark"]),
             f"{r['difference']:+.3f}", f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]", str(r["n_prompts"]),
             "yes" if r["excludes_zero"] else "no"] for r in rows]
    return ["### Paired differences of τ", "",
            "Each difference resamples the same prompts for both runs (2,000 bootstrap replicates, 95%); "
            "\"shown\" means the interval excludes 0.", "",
            *_markdown_table(["comparison", "T", "benchmark", "Δτ", "95% CI", "prompts", "shown"], body)]


def accuracy_markdown(rows: list[dict], runs: list[Run], benchmarks: list[str]) -> list[str]:
    """Accuracy per math set and, at T=0, how many outputs equal plain decoding token for token."""
    graded = [b for b in benchmarks if b != "mt_bench"]
    lines = []
    for temperature in sorted({r["temperature"] for r in rows}):
        header = ["run", *(COLUMN_NAMES[b] for b in graded)] + (["same tokens as plain"] if temperature == 0 else [])
        body = []
        for run in runs:
            cells = {r["benchmark"]: r for r in rows if r["run"] == run.id and r["temperature"] == temperature}
            if not cells:
                continue
            row = [run.label, *(_fmt(cells[b]["accuracy"], 3) if b in cells else "–" for b in graded)]
            if temperature == 0:
                same = [(c.get("same_as_plain"), c["n_prompts"]) for c in cells.values()]
                row.append("–" if any(s is None for s, _ in same) else
                           f"{sum(s for s, _ in same)}/{sum(n for _, n in same)}")
            body.append(row)
        lines += [f"### Accuracy, T={temperature:g}", ""] + _markdown_table(header, body)
    return lines


def speed_markdown(rows: list[dict], runs: list[Run]) -> list[str]:
    """Tokens/s over all benchmarks of a temperature, and the ratio to transformers on the same prompts."""
    lines = []
    for temperature in sorted({r["temperature"] for r in rows}):
        totals = {}
        for run in runs:
            mine = [r for r in rows if r["run"] == run.id and r["temperature"] == temperature]
            if mine and all(r["seconds"] for r in mine):   # replayed rows have no time
                totals[run.id] = (run.label, sum(r["new_tokens"] for r in mine) / sum(r["seconds"] for r in mine))
        body = []
        for rid, (label, tps) in totals.items():
            ratios = [_fmt(tps / totals[b][1]) if b in totals else "–" for b in BASELINE_IDS.values()]
            body.append([label, f"{tps:.2f}", *ratios])
        if body:   # replayed runs have no time
            lines += [f"### Speed, T={temperature:g}", ""] + _markdown_table(
                ["run", "tokens/s", "x generate", "x prompt-lookup"], body)
    return lines


def category_rows(runs: list[Run], records: dict[tuple, dict], items: dict[str, list[BenchmarkItem]],
                  benchmark: str = "mt_bench", seeds: int = 1) -> list[dict]:
    """τ per category of `benchmark` (MT-Bench: writing, roleplay, ...) for each run and temperature, with its
    bootstrap interval over the category's prompts."""
    by_category: dict[str, list[BenchmarkItem]] = {}
    for item in items.get(benchmark, []):
        by_category.setdefault(item.category or "uncategorized", []).append(item)
    rows = []
    for run in runs:
        if not run.drafts:
            continue
        for temperature in run.temperatures:
            for category, its in sorted(by_category.items()):
                recs = _records(records, run.id, temperature, benchmark, its, seeds)
                steps = sum(r["n_steps"] for r in recs)
                if steps:
                    rows.append({"run": run.id, "label": run.label, "temperature": temperature,
                                 "category": category, "n_prompts": _prompts(recs),
                                 "tau": _rate(sum(r["committed"] for r in recs), steps),
                                 "tau_ci": tau_interval(recs)})
    return rows


def category_markdown(rows: list[dict]) -> list[str]:
    lines = []
    for temperature in sorted({r["temperature"] for r in rows}):
        mine = [r for r in rows if r["temperature"] == temperature]
        categories = sorted({r["category"] for r in mine})
        cells = {(r["label"], r["category"]): r for r in mine}
        labels = list(dict.fromkeys(r["label"] for r in mine))
        counts = {c: max(r["n_prompts"] for r in mine if r["category"] == c) for c in categories}
        body = [[label, *(_with_interval(cells[label, c]["tau"], cells[label, c]["tau_ci"], False)
                          if (label, c) in cells else "–" for c in categories)] for label in labels]
        lines += [f"### MT-Bench τ per category, T={temperature:g}", "",
                  "In parentheses: 95% bootstrap interval over the category's prompts.", "",
                  *_markdown_table(["drafter / policy", *(f"{c} ({counts[c]})" for c in categories)], body)]
    return lines


def oracle_markdown(rows: list[dict]) -> list[str]:
    """Runs whose drafters all drafted, replayed: the choice made vs each fixed drafter vs the per-step oracle."""
    judged = [r for r in rows if r.get("oracle")]
    if not judged:
        return []
    body = [[r["label"], COLUMN_NAMES.get(r["benchmark"], r["benchmark"]), str(r["oracle"]["steps"]),
             _fmt(r["oracle"]["tau_chosen"]),
             ", ".join(f"{k} {_fmt(v)}" for k, v in r["oracle"]["tau_drafters"].items()),
             _fmt(r["oracle"]["tau_oracle"]), _fmt(r["oracle"]["share_of_oracle_gain"])] for r in judged]
    return ["### Routing against an oracle", "",
            "On the same steps of each run (replay judges every drafter's own tree): tokens per step of the tree the "
            "run verified, of each drafter's tree, and of the per-step best one; the share is (chosen − best fixed) "
            "/ (oracle − best fixed).", "",
            *_markdown_table(["run", "benchmark", "steps", "τ chosen", "τ per drafter", "τ oracle",
                              "share of oracle gain"], body)]


def separation_rows(runs: list[Run], records: dict[tuple, dict], items: dict[str, list[BenchmarkItem]],
                    seeds: int = 1) -> list[dict]:
    """Per run and temperature, over every benchmark: confidence and entropy AUC of accepted vs rejected nodes
    per draft depth."""
    out = []
    for run in runs:
        if not run.drafts:
            continue
        for temperature in run.temperatures:
            recs = [r for bench, its in items.items() for r in _records(records, run.id, temperature, bench, its,
                                                                         seeds)]
            out += [{"run": run.id, "label": run.label, "temperature": temperature, **row}
                    for row in separation(recs)]
    return out


def separation_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    body = [[r["label"], f"{r['temperature']:g}", str(r["depth"]), str(r["accepted"]), str(r["rejected"]),
             _fmt(r["confidence_auc"], 3), _fmt(r["entropy_auc"], 3)] for r in rows]
    return ["### Does the signal separate accepted from rejected nodes?", "",
            "Per draft depth, over all benchmarks: the AUC of draft confidence (higher for accepted nodes) and of "
            "draft entropy (lower for accepted nodes), from 20-bin histograms (same bin: a tie). 0.5 is chance.", "",
            *_markdown_table(["run", "T", "depth", "accepted nodes", "rejected nodes", "confidence AUC",
                              "entropy AUC"], body)]
