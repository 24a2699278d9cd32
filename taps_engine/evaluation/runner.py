"""Run an evaluation matrix resumably: one JSONL record per (run, temperature, benchmark, prompt).

Prompts are the outer loop and runs the inner one, so every run sees the same machine load (speed ratios are
taken between runs on the same prompts) and an interrupted experiment has covered all runs evenly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..acceptance import SamplingParams
from ..answers import extract_answer, is_correct
from ..eval_sets import BenchmarkItem, load_benchmark
from ..decoding import Decoder, GenerationResult
from ..fileio import atomic_write
from ..head import DraftHead, average_heads, load_head, weights_digest
from ..lockstep import generate_batch
from ..metrics import depth_counts, drafter_step_counts
from ..policies import Decision, policy_spec
from ..replay import References, replay_batch
from ..speed import hf_generate
from ..settings import numerics_dtype
from ..target import Target
from .config import AVERAGE, EvalConfig, RunSpec
from .routing import nodes_by_depth, oracle_counts


@dataclass
class Run:
    """One table row: what decodes (an engine policy over drafters, or a transformers baseline)."""

    id: str
    label: str
    method: str          # eagle2 | hass | mixed | random | target | transformers
    drafter: str
    policy: str
    temperatures: list[float]
    spec: RunSpec | None = None
    alpha: float | None = None
    setup: str = ""      # hash of what this run's outputs depend on beyond the experiment's fingerprint
    missing: tuple[str, ...] = ()   # its drafters not on this machine: its stored records cannot be checked here

    @property
    def is_baseline(self) -> bool:
        return self.method == "transformers"

    @property
    def drafts(self) -> bool:
        """Speculative decoding with drafters (not a baseline or the engine's plain loop): it has a τ."""
        return not self.is_baseline and self.policy != "plain"


def expand_runs(cfg: EvalConfig) -> list[Run]:
    """Rows in config order, `average` expanded per alpha, baselines last; ids are unique."""
    methods = {name: spec.resolved_method() for name, spec in cfg.drafters.items()}
    # by content, not place: records made with other weights at the same path (a retrained or replaced head) are not
    # current, and a head copied elsewhere (a cache candidate shipped in the repo) keeps its records
    identity = {name: weights_digest(spec.path) or (str(spec.path) if spec.path else None)
                for name, spec in cfg.drafters.items()}
    absent = {name for name, spec in cfg.drafters.items() if spec.path is not None and not Path(spec.path).exists()}

    def setup(spec: RunSpec | None, alpha: float | None = None) -> str:
        key = {"run": spec.model_dump(mode="json", exclude={"label", "temperatures"}) if spec else None,
               "tree": asdict(spec.tree or cfg.tree) if spec else None, "alpha": alpha,
               "drafters": [[identity[d], methods[d], cfg.drafters[d].seed]
                            for d in (spec.drafters if spec else [])]}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    runs: list[Run] = []
    for spec in cfg.runs:
        temps = spec.temperatures or cfg.temperatures
        used = sorted({methods[d] for d in spec.drafters})
        method = "target" if not used else used[0] if len(used) == 1 else "mixed"
        drafter = "+".join(spec.drafters) or "-"
        suffix = f"@{spec.tree.total_tokens}n" if spec.tree else ""
        if spec.policy == AVERAGE:
            for alpha in spec.alphas:
                rid = f"avg({','.join(spec.drafters)})@{alpha:g}{suffix}"
                runs.append(Run(rid, f"{spec.label}@{alpha:g}" if spec.label else rid, method, drafter, AVERAGE,
                                temps, spec, alpha, setup(spec, alpha)))
            continue
        one = policy_spec(spec.policy).max_drafters
        rid = (spec.policy if one == 0 else drafter if one == 1 else f"{spec.policy}({drafter})") + suffix
        runs.append(Run(rid, spec.label or rid, method, drafter, spec.policy, temps, spec, setup=setup(spec),
                        missing=tuple(d for d in spec.drafters if d in absent)))
    runs += [Run(f"hf-{b}", f"transformers {b}", "transformers", "-", b, list(cfg.temperatures), setup=setup(None))
             for b in cfg.baselines]
    ids = [r.id for r in runs]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"runs {duplicated} appear twice; give them distinct settings or labels")
    return runs


def fingerprint(cfg: EvalConfig) -> str:
    """Settings every record depends on; a run's own drafters and tree are in its `setup` hash, so runs and
    drafters can be added to an experiment later without invalidating the rest."""
    key = {"target": cfg.target, "dtype": numerics_dtype(cfg.dtype, cfg.numerics), "seed": cfg.seed,
           "max_new_tokens": cfg.max_new_tokens}
    if cfg.replay:
        key["replay"] = True
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def record_key(run: str, temperature: float, benchmark: str, item: str) -> tuple:
    return run, float(temperature), benchmark, item


def sample_ids(item: str, temperature: float, seeds: int) -> list[str]:
    """The records of one prompt: one at T=0 (greedy), `seeds` at T>0 (`item`, `item~1`, ...)."""
    return [item] + [f"{item}~{k}" for k in range(1, seeds if temperature > 0 else 1)]


def sampling_seed(base: int, index: int, sample: int) -> int:
    return base + index + 100_003 * sample


class RecordStore:
    """Append-only JSONL; a torn last line (a crash mid-write) is dropped on open, everything else kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[tuple, dict] = {}
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        good = []
        for number, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                self.records[record_key(rec["run"], rec["temperature"], rec["benchmark"], rec["item"])] = rec
                good.append(line)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                if number != len(lines):
                    raise ValueError(f"{path}:{number}: corrupt record ({e}); move the file away to start over")
        if len(good) != len(lines):
            atomic_write(path, lambda tmp: Path(tmp).write_text("".join(g + "\n" for g in good)))

    def done(self, key: tuple, setup: str) -> bool:
        """Stored, and produced by the same run setup (a changed run is generated again)."""
        return key in self.records and self.records[key].get("setup") == setup

    def current(self, runs: list["Run"]) -> dict[tuple, dict]:
        """The records of these runs' setups; a run whose drafters are not on this machine (a candidate in another
        machine's cache) keeps its stored records as they are, since its setup cannot be checked here."""
        setups = {r.id: r.setup for r in runs}
        unchecked = {r.id for r in runs if r.missing}
        return {k: v for k, v in self.records.items()
                if setups.get(v["run"]) == v.get("setup") or v["run"] in unchecked}

    def append(self, rec: dict) -> None:
        """One write of the whole line to a file opened for appending: processes sharing the file (shards) never
        interleave their lines."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(rec) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records[record_key(rec["run"], rec["temperature"], rec["benchmark"], rec["item"])] = rec


def prompt_record(run: Run, item: BenchmarkItem, temperature: float, results: list[GenerationResult],
                  mode: str = "live", sample: str | None = None, lanes: int = 1) -> dict:
    """Everything the report needs from one prompt, as counts (aggregated by summing). `mode` (`decoding_mode`):
    a replayed or path-verified record has no time (seconds 0: no speed figure); a live one decoded in lock step
    with others says how many (`lanes`: its seconds are its share of their batch's)."""
    steps = [s for r in results for s in r.steps]
    reached, accepted = depth_counts(results)
    selections, _ = drafter_step_counts(results)
    answer = extract_answer(item.benchmark, results[-1].text) if item.answer is not None else None
    record = {
        "run": run.id, "setup": run.setup, "temperature": float(temperature), "benchmark": item.benchmark,
        "item": sample or item.id,
        "new_tokens": sum(len(r.token_ids) for r in results),
        "seconds": sum(r.seconds for r in results) if mode == "live" else 0.0, "mode": mode,
        "n_steps": len(steps), "committed": sum(s.acceptance_length for s in steps),
        "verified_nodes": sum(s.tree_size for s in steps),
        "depth_reached": {str(d): n for d, n in reached.items()},
        "depth_accepted": {str(d): n for d, n in accepted.items()},
        "selections": dict(selections), "nodes_by_depth": nodes_by_depth(results), "oracle": oracle_counts(results),
        "turns": [{"token_ids": r.token_ids, "text": r.text, "finish": r.finish_reason, "decision": r.decision.to_dict()}
                  for r in results],
        "answer": answer, "gold": item.answer,
        "correct": is_correct(item.benchmark, answer, item.answer) if item.answer is not None else None,
    }
    if lanes > 1 and mode == "live":
        record["lanes"] = lanes
    return record


Generate = Callable[[list[list[dict]], float, list[int], list[str | None]], list[GenerationResult]]
"""Answers one turn of several conversations: (messages of each, temperature, sampling seed of each, drafter
assigned to each) -> a result per conversation."""


def conversations(generate: Generate, items: list[BenchmarkItem], temperature: float, seeds: list[int],
                  keep_drafter: bool) -> list[list[GenerationResult]]:
    """Answer each user turn of every item after the model's own previous answers (MT-Bench turn 2 follows turn
    1), the items' turns of one index together.

    With `keep_drafter`, later turns reuse the drafter chosen on the first, as the serving assignment cache does.
    """
    messages: list[list[dict]] = [[] for _ in items]
    results: list[list[GenerationResult]] = [[] for _ in items]
    assigned: list[str | None] = [None] * len(items)
    for turn in range(max(len(item.turns) for item in items)):
        lanes = [i for i, item in enumerate(items) if turn < len(item.turns)]
        for i in lanes:
            messages[i].append({"role": "user", "content": items[i].turns[turn]})
        answers = generate([messages[i] for i in lanes], temperature, [seeds[i] for i in lanes],
                           [assigned[i] for i in lanes])
        for i, result in zip(lanes, answers):
            if keep_drafter:
                assigned[i] = result.decision.drafter
            messages[i].append({"role": "assistant", "content": result.text})
            results[i].append(result)
    return results


def load_heads(cfg: EvalConfig, target: Target, names: set[str]) -> dict[str, DraftHead]:
    heads = {}
    for name, spec in cfg.drafters.items():
        if name not in names:
            continue
        if spec.path is None:
            heads[name] = DraftHead.random(target.model, seed=spec.seed)
        elif not spec.path.exists():
            raise ValueError(f"drafter {name!r}: {spec.path} does not exist (train it or fix the path)")
        else:
            heads[name] = load_head(spec.path, target.model)
    return heads


def decoding_mode(run: Run, cfg: EvalConfig, temperature: float) -> str:
    """How the run's records at `temperature` are made: `replay` (T=0 against the plain greedy answer), `path`
    (verification along the accepted paths only, taps_engine/lockstep.py) or `live`; baselines are always live."""
    if run.is_baseline:
        return "live"
    if cfg.replay and temperature == 0:
        return "replay"
    return "path" if cfg.path_verification else "live"


def make_generator(run: Run, cfg: EvalConfig, target: Target, heads: dict[str, DraftHead],
                   references: References | None = None) -> Generate:
    """A function answering one turn for this run: the engine with the run's policy (replayed at T=0 when
    `cfg.replay`), or transformers."""
    if run.is_baseline:
        lookup = run.policy == "prompt-lookup"

        def baseline(messages: list[dict], temperature: float, seed: int) -> GenerationResult:
            ids = target.format.encode(messages)
            start = time.perf_counter()
            out = hf_generate(target, ids, cfg.max_new_tokens, temperature, seed, prompt_lookup=lookup)
            seconds = time.perf_counter() - start
            text = target.format.decode(out)
            finish = "eos" if out and out[-1] in target.format.eos_token_ids else "length"
            return GenerationResult(ids, out, text, finish, [], run.policy, Decision(), seconds)
        return lambda messages, temperature, seeds, _: [baseline(m, temperature, s) for m, s in zip(messages, seeds)]

    spec = run.spec
    tree = spec.tree or cfg.tree
    if run.policy == AVERAGE:
        a, b = spec.drafters
        decoder = Decoder(target, {run.id: average_heads(heads[a], heads[b], run.alpha)}, "single", tree)
    else:
        decoder = Decoder(target, {d: heads[d] for d in spec.drafters}, run.policy, tree)

    def engine(messages: list[list[dict]], temperature: float, seeds: list[int],
               assigned: list[str | None]) -> list[GenerationResult]:
        mode = decoding_mode(run, cfg, temperature)
        if mode == "replay":   # greedy: the sampling seed plays no part
            return replay_batch(decoder, references.many(messages),
                                SamplingParams(cfg.max_new_tokens, temperature), assigned)
        params = [SamplingParams(cfg.max_new_tokens, temperature, seed=s) for s in seeds]
        if len(messages) > 1 or mode == "path":
            return generate_batch(decoder, messages, params, assigned, path_only=mode == "path")
        return [decoder.generate(messages[0], params[0], assigned[0])]
    return engine


def config_items(cfg: EvalConfig) -> dict[str, list[BenchmarkItem]]:
    """Each benchmark's prompts: the first `n_prompts`, or with `prompt_seed` as many drawn at random (in file
    order), so a subset is reproducible from the config alone."""
    out = {}
    for benchmark in cfg.benchmarks:
        n = cfg.prompts_for(benchmark)
        if cfg.prompt_seed is None or n is None:
            out[benchmark] = load_benchmark(benchmark, n)
            continue
        every = load_benchmark(benchmark)
        keep = sorted(random.Random(f"{cfg.prompt_seed}/{benchmark}").sample(range(len(every)), min(n, len(every))))
        out[benchmark] = [every[i] for i in keep]
    return out


Prompt = tuple[BenchmarkItem, int, int]   # an item, its index in the benchmark's prompts, its sample number


def pending_work(cfg: EvalConfig, runs: list[Run], items: dict[str, list[BenchmarkItem]], store: RecordStore,
                 shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[float, Run, list[Prompt]]]:
    """The records still missing, as (temperature, run, prompts): prompts are taken `replay_lanes` at a time
    where they are replayed (`live_lanes` at a time when live), and each such group's runs follow each other. With `shard`
    (k, n), only every n-th prompt from the k-th (a prompt's runs stay together, so its replay reference is
    computed once)."""
    k, n = shard
    for temperature in cfg.temperatures:
        for benchmark in cfg.benchmarks:
            prompts = [(item, index, sample) for index, item in enumerate(items[benchmark]) if index % n == k
                       for sample in range(len(sample_ids(item.id, temperature, cfg.seeds)))]
            width = cfg.replay_lanes if cfg.replay and temperature == 0 else cfg.live_lanes
            for start in range(0, len(prompts), width):
                for run in runs:
                    todo = [(item, index, sample) for item, index, sample in prompts[start:start + width]
                            if temperature in run.temperatures and not store.done(
                                record_key(run.id, temperature, benchmark,
                                           sample_ids(item.id, temperature, cfg.seeds)[sample]), run.setup)]
                    if todo:
                        yield temperature, run, todo


def run_experiment(cfg: EvalConfig, out_dir: Path, target: Target,
                   progress: Callable[[int, int, str], None] = lambda done, total, what: None,
                   only: str | None = None, shard: tuple[int, int] = (0, 1)) -> RecordStore:
    """Generate every missing record of the matrix into `out_dir/records.jsonl` (`only`: a regex selecting
    run ids, e.g. to start before every drafter is trained; only the drafters those runs use are loaded;
    `shard` (k, n): this process's share of the prompts, beside n - 1 others appending to the same file)."""
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: the shard index must lie in [0, {n})")
    runs = expand_runs(cfg)   # selection checked before anything is written
    if only is not None:
        try:
            pattern = re.compile(only)
        except re.error as e:
            raise ValueError(f"--runs {only!r} is not a valid regular expression: {e}") from e
        runs = [r for r in runs if pattern.search(r.id)]
        if not runs:
            raise ValueError(f"no run id matches {only!r}")
    for run in runs:
        if run.missing:
            where = ", ".join(f"{d} ({cfg.drafters[d].path})" for d in run.missing)
            raise ValueError(f"run {run.id} needs drafters not found here: {where}; train or copy them, or leave "
                             "the run out with --runs")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "experiment.json"
    fp = fingerprint(cfg)
    if manifest.exists():
        previous = json.loads(manifest.read_text()).get("fingerprint")
        if previous != fp:
            raise ValueError(f"{out_dir} holds records of different settings (target, dtype, seed or "
                             "max_new_tokens changed); use another --out")
    text = json.dumps({"fingerprint": fp, "config": cfg.model_dump(mode="json")}, indent=2)
    atomic_write(manifest, lambda tmp: Path(tmp).write_text(text.replace(str(Path.home()), "~")))  # shareable
    items = config_items(cfg)
    store = RecordStore(out_dir / "records.jsonl")
    work = list(pending_work(cfg, runs, items, store, shard))
    if not work:
        return store
    heads = load_heads(cfg, target, {d for r in runs if r.spec for d in r.spec.drafters})
    depth = max([(r.spec.tree or cfg.tree).depth for r in runs if r.spec] + [0])
    # every reference of a group of lanes (all of a conversation's turns) stays in memory while its runs replay
    references = References(target, cfg.max_new_tokens, depth + 2, size=2 * cfg.replay_lanes) if cfg.replay else None
    generators = {run.id: make_generator(run, cfg, target, heads, references) for run in runs}
    warm_up = [{"role": "user", "content": "Hello!"}]
    for run_id, generate in generators.items():   # first calls pay one-time costs: keep them out of tokens/s
        progress(0, len(work), f"warming up {run_id}")
        with torch.inference_mode():
            generate([warm_up], 0.0, [0], [None])
    total, done = sum(len(prompts) for _, _, prompts in work), 0
    for temperature, run, prompts in work:
        first = prompts[0][0]
        what = f"#{prompts[0][1] + 1}" + (f"-{prompts[-1][1] + 1}" if len(prompts) > 1 else "")
        progress(done, total, f"T={temperature:g} {first.benchmark} {what} {run.label}")
        with torch.inference_mode():
            answers = conversations(generators[run.id], [item for item, _, _ in prompts], temperature,
                                    [sampling_seed(cfg.seed, index, sample) for _, index, sample in prompts],
                                    keep_drafter=run.spec is not None and run.policy != AVERAGE
                                    and policy_spec(run.policy).assignable)
        lanes = 1 if run.is_baseline else len(prompts)
        for (item, _, sample), results in zip(prompts, answers):
            store.append(prompt_record(run, item, temperature, results, decoding_mode(run, cfg, temperature),
                                       sample_ids(item.id, temperature, cfg.seeds)[sample], lanes))
        done += len(prompts)
    progress(total, total, "done")
    return store
