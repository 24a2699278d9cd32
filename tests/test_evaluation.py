"""The evaluation harness end to end on a tiny random target over the real tokenizer: tables, plots, resume."""

import json
import shutil

import pytest
import torch
import yaml

from taps_engine.decoding import PlainDecoder
from taps_engine.evaluation.cli import write_report
from taps_engine.evaluation.config import load_eval_config
from taps_engine.evaluation.plots import PLOTS
from taps_engine.evaluation.runner import RecordStore, expand_runs, run_experiment
from tiny import tiny_chat_target

BENCH_FILES = {
    "mt_bench/question.jsonl": [{"question_id": 81 + i, "category": "writing",
                                 "turns": [f"Write a haiku about the number {i}.", "Now make it rhyme."]}
                                for i in range(3)],
    "gsm8k/test.jsonl": [{"question": f"Sam has {i} pens and buys 1,000 more. How many pens?",
                          "answer": f"{i} + 1000 = 100{i}\n#### 1,00{i}"} for i in range(3)],
    "math500/test.jsonl": [{"problem": f"What is $\\frac{{{i}}}{{2}}$?", "solution": f"$\\boxed{{\\frac{{{i}}}{{2}}}}$",
                            "answer": f"\\frac{{{i}}}{{2}}", "unique_id": f"test/algebra/{i}.json"}
                           for i in range(3)],
}
SVAMP = [{"ID": f"chal-{i}", "Body": f"Jack had {i} apples.", "Question": "How many apples does he have?",
          "Answer": float(i)} for i in range(3)]

CONFIG = {
    "name": "tiny",
    "target": "tiny",
    "seed": 0,
    "tree": {"total_tokens": 6, "depth": 2, "top_k": 2},
    "temperatures": [0.0, 1.0],
    "max_new_tokens": 6,
    "drafters": {"a": {"seed": 0}, "b": {"seed": 1}},
    "runs": [{"policy": "plain"}, {"policy": "single", "drafters": ["a"]}, {"policy": "single", "drafters": ["b"]},
             {"policy": "average", "drafters": ["a", "b"], "alphas": [0.5], "temperatures": [0.0]},
             {"policy": "confidence", "drafters": ["a", "b"]}, {"policy": "entropy", "drafters": ["a", "b"]},
             {"policy": "merged-concat", "drafters": ["a", "b"]}, {"policy": "merged-trie", "drafters": ["a", "b"]},
             {"policy": "merged-budget", "drafters": ["a", "b"]},
             {"policy": "merged-budget", "drafters": ["a", "b"], "tree": {"total_tokens": 11, "depth": 2, "top_k": 2},
              "temperatures": [0.0]},
             {"policy": "sticky", "drafters": ["a", "b"]}],
    "profiles": {"small": {"n_prompts": 2}, "wide": {"n_prompts": 3}},
}


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for rel, records in BENCH_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "svamp").mkdir()
    (root / "svamp/SVAMP.json").write_text(json.dumps(SVAMP))
    monkeypatch.setenv("TAPS_DATA_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def target(tokenizer):
    return tiny_chat_target("llama", tokenizer)


# what `taps eval` records of the machine, as a report needs it
ENV = {"dtype": "float32", "device": "cpu", "cpu": "test", "torch_threads": 1, "gpu": None, "python": "3",
       "torch": "x", "transformers": "y"}


def write_config(tmp_path, config=CONFIG):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def evaluated(tmp_path, config, target, report_target=None):
    """The config's `small` profile run into tmp_path/out and reported; (config, out directory)."""
    cfg = load_eval_config(write_config(tmp_path, config), "small")
    out = tmp_path / "out"
    run_experiment(cfg, out, target)
    write_report(cfg, out, "taps eval", ENV, report_target)
    return cfg, out


@pytest.mark.slow
def test_tiny_eval_tables_plots_and_losslessness(tmp_path, bench_dir, target):
    cfg = load_eval_config(write_config(tmp_path), "small")
    out = tmp_path / "out"
    run_experiment(cfg, out, target)
    written = write_report(cfg, out, "taps eval --config eval.yaml --profile small", ENV)
    rows = json.loads((out / "records.json").read_text())
    runs = expand_runs(cfg)
    engine_runs = [r for r in runs if not r.is_baseline]
    for row in rows:
        for key in ("method", "drafter", "policy", "temperature", "benchmark", "tau", "n_prompts", "n_steps",
                    "new_tokens", "accuracy", "tokens_per_s", "speedup_vs_generate", "speedup_vs_prompt_lookup"):
            assert key in row
        assert row["n_prompts"] == 2
        assert (row["accuracy"] is None) == (row["benchmark"] == "mt_bench")
        assert row["speedup_vs_generate"] is not None
        if row["temperature"] == 0 and row["run"] != "hf-prompt-lookup":
            assert row["same_as_plain"] == 2, row["run"]   # lossless: every policy reproduces plain greedy
    assert {(r["run"], r["temperature"], r["benchmark"]) for r in rows} == {
        (run.id, t, b) for run in runs for t in run.temperatures for b in cfg.benchmarks}

    tables = json.loads((out / "tables.json").read_text())
    assert set(tables) == {"0", "1"}
    for key, table in tables.items():
        assert table["columns"] == ["MT-Bench", "GSM8K", "MATH-500", "SVAMP", "Average"]
        expected = [r.label for r in engine_runs if r.policy != "plain" and float(key) in r.temperatures]
        assert [row["label"] for row in table["rows"]] == expected
        raw = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        for row in table["rows"]:
            assert row["Average"] == pytest.approx(sum(row[c] for c in table["columns"][:4]) / 4, abs=1e-3)
            run = next(r for r in engine_runs if r.label == row["label"])
            for column, benchmark in zip(table["columns"], cfg.benchmarks):
                mine = [r for r in raw if r["run"] == run.id and r["temperature"] == float(key)
                        and r["benchmark"] == benchmark]
                # a cell is committed tokens / verify steps over the benchmark's prompts, from the raw records
                tau = sum(r["committed"] for r in mine) / sum(r["n_steps"] for r in mine)
                assert row[column] == pytest.approx(tau, abs=1e-3)
    for name in PLOTS:
        png = out / "plots" / f"{name}.png"
        assert png in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (out / "README.md").read_text()
    assert "taps eval --config eval.yaml --profile small" in readme and "| MT-Bench | GSM8K |" in readme


def test_mt_bench_second_turn_follows_the_first_answer(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["mt_bench"], "temperatures": [0.0], "baselines": [],
              "runs": [{"policy": "plain"}, {"policy": "sticky", "drafters": ["a", "b"]}]}
    cfg = load_eval_config(write_config(tmp_path, config), "small")
    store = run_experiment(cfg, tmp_path / "out", target)
    first = json.loads((bench_dir / "mt_bench/question.jsonl").read_text().splitlines()[0])
    for run in ("plain", "sticky(a+b)"):
        rec = store.records[(run, 0.0, "mt_bench", "81")]
        turn1, turn2 = rec["turns"]
        messages = [{"role": "user", "content": first["turns"][0]}, {"role": "assistant", "content": turn1["text"]},
                    {"role": "user", "content": first["turns"][1]}]
        again = PlainDecoder(target).generate(messages, max_new_tokens=cfg.max_new_tokens)
        assert again.token_ids == turn2["token_ids"]
    sticky = store.records[("sticky(a+b)", 0.0, "mt_bench", "81")]["turns"]
    assert sticky[1]["decision"] == {"drafter": sticky[0]["decision"]["drafter"], "assigned": True}


def test_resume_skips_finished_records(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["gsm8k", "svamp"], "temperatures": [0.0], "baselines": ["generate"],
              "runs": [{"policy": "plain"}, {"policy": "single", "drafters": ["a"]}]}
    path = write_config(tmp_path, config)
    out = tmp_path / "out"
    calls = []

    def progress(done, total, what):
        calls.append(total)

    run_experiment(load_eval_config(path, "small"), out, target, progress)
    assert calls[-1] == 3 * 2 * 2     # runs x benchmarks x prompts
    lines = (out / "records.jsonl").read_text().splitlines()
    assert len(lines) == 12
    calls.clear()
    run_experiment(load_eval_config(path, "small"), out, target, progress)
    assert calls == []                 # nothing left to do
    (out / "records.jsonl").write_text("\n".join(lines[:10]) + "\n" + lines[10][:25])   # a torn last line
    run_experiment(load_eval_config(path, "small"), out, target, progress)
    assert calls[-1] == 2
    assert (out / "records.jsonl").read_text().splitlines()[:10] == lines[:10]
    calls.clear()
    run_experiment(load_eval_config(path, "wide"), out, target, progress)   # a third prompt per benchmark
    assert calls[-1] == 3 * 2
    assert len(RecordStore(out / "records.jsonl").records) == 18
    calls.clear()
    retrained = {**config, "drafters": {"a": {"seed": 5}, "b": {"seed": 1}}}
    run_experiment(load_eval_config(write_config(tmp_path, retrained), "small"), out, target, progress)
    assert calls[-1] == 2 * 2          # only the run whose drafter changed is generated again


def test_shards_fill_one_records_file_together_with_each_record_once(tmp_path, bench_dir, target):
    """Shards 0/2 and 1/2 into one directory: every prompt's records once, the same as one process writes."""
    from taps_engine.evaluation.cli import parse_shard

    config = {**CONFIG, "benchmarks": ["gsm8k", "svamp"], "temperatures": [0.0], "baselines": [],
              "runs": [{"policy": "plain"}, {"policy": "single", "drafters": ["a"]}]}
    cfg = load_eval_config(write_config(tmp_path, config), "wide")
    whole = run_experiment(cfg, tmp_path / "whole", target)
    for k, expected in ((0, 2 * 2 * 2), (1, 2 * 2 * 3)):   # prompts 0 and 2 of each benchmark, then prompt 1
        assert len(run_experiment(cfg, tmp_path / "shards", target, shard=(k, 2)).records) == expected
    lines = (tmp_path / "shards" / "records.jsonl").read_text().splitlines()
    keys = [(r["run"], r["benchmark"], r["item"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) == len(whole.records) == 2 * 2 * 3
    shards = RecordStore(tmp_path / "shards" / "records.jsonl").records
    assert {k: v["committed"] for k, v in shards.items()} == {k: v["committed"] for k, v in whole.records.items()}
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="shard index"):
        run_experiment(cfg, tmp_path / "bad", target, shard=(2, 2))


def test_replaced_weights_at_the_same_path_are_evaluated_again(tmp_path, bench_dir, target):
    from taps_engine.head import DraftHead, save_head

    head_dir = tmp_path / "head"
    save_head(DraftHead.random(target.model, seed=3), head_dir)
    config = {**CONFIG, "benchmarks": ["svamp"], "temperatures": [0.0], "baselines": [],
              "drafters": {"a": {"path": str(head_dir)}}, "runs": [{"policy": "single", "drafters": ["a"]}]}
    path, out, calls = write_config(tmp_path, config), tmp_path / "out", []
    run_experiment(load_eval_config(path, "small"), out, target, lambda done, total, what: calls.append(total))
    assert calls[-1] == 2
    calls.clear()
    run_experiment(load_eval_config(path, "small"), out, target, lambda done, total, what: calls.append(total))
    assert calls == []
    save_head(DraftHead.random(target.model, seed=4), head_dir)   # a better drafter shipped in its place
    run_experiment(load_eval_config(path, "small"), out, target, lambda done, total, what: calls.append(total))
    assert calls[-1] == 2
    calls.clear()
    shutil.copytree(head_dir, tmp_path / "shipped")                 # the same weights moved to where they ship
    moved = {**config, "drafters": {"a": {"path": str(tmp_path / "shipped")}}}
    run_experiment(load_eval_config(write_config(tmp_path, moved), "small"), out, target,
                   lambda done, total, what: calls.append(total))
    assert calls == []


def test_runs_of_drafters_absent_here_keep_their_records_and_refuse_to_run(tmp_path, bench_dir, target):
    """A report rebuilt on a machine without a candidate's weights (another machine's cache) keeps that candidate's
    rows, says so, and does not evaluate it again with nothing to load."""
    from taps_engine.head import DraftHead, save_head

    for seed, name in ((3, "a"), (4, "b")):
        save_head(DraftHead.random(target.model, seed=seed), tmp_path / name)
    config = {**CONFIG, "benchmarks": ["svamp"], "temperatures": [0.0], "baselines": [],
              "drafters": {n: {"path": str(tmp_path / n)} for n in "ab"},
              "runs": [{"policy": "single", "drafters": [n]} for n in "ab"]}
    cfg, out = evaluated(tmp_path, config, target)
    before = json.loads((out / "records.json").read_text())
    shutil.rmtree(tmp_path / "b")
    cfg = load_eval_config(write_config(tmp_path, config), "small")
    write_report(cfg, out, "taps eval --report-only", ENV)
    assert json.loads((out / "records.json").read_text()) == before
    assert "not checked against their drafters" in (out / "README.md").read_text()
    with pytest.raises(ValueError, match=r"run b needs drafters not found here: b \("):
        run_experiment(cfg, out, target)
    run_experiment(cfg, out, target, only="^a$")   # the others still run


def test_changed_settings_refuse_to_mix_records(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["svamp"], "temperatures": [0.0], "baselines": [], "runs": [{"policy": "plain"}]}
    run_experiment(load_eval_config(write_config(tmp_path, config), "small"), tmp_path / "out", target)
    changed = {**config, "max_new_tokens": 7}
    with pytest.raises(ValueError, match="different settings"):
        run_experiment(load_eval_config(write_config(tmp_path, changed), "small"), tmp_path / "out", target)


@pytest.mark.parametrize("change, message", [
    ({"runs": [{"policy": "telepathy"}]}, "unknown policy"),
    ({"runs": [{"policy": "single", "drafters": ["a", "b"]}]}, r"takes at most 1 drafter\(s\), got 2"),
    ({"runs": [{"policy": "confidence", "drafters": ["a", "zzz"]}]}, "undeclared drafter"),
    ({"runs": [{"policy": "average", "drafters": ["a", "b"], "alphas": [1.0]}]}, "strictly between"),
    ({"benchmarks": ["hellaswag"]}, "unknown benchmark"),
    ({"temperatures": [-1.0]}, "temperatures"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_configs_are_rejected_with_the_field(tmp_path, change, message):
    path = write_config(tmp_path, {**CONFIG, **change})
    with pytest.raises(ValueError, match=message) as info:
        load_eval_config(path)
    assert str(path) in str(info.value)


def test_unknown_profile(tmp_path):
    with pytest.raises(ValueError, match="no profile 'huge'; available: small, wide"):
        load_eval_config(write_config(tmp_path), "huge")


def test_run_filter_generates_only_matching_runs(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["svamp"], "temperatures": [0.0], "baselines": ["generate"],
              "drafters": {"a": {"seed": 0}, "b": {"path": str(tmp_path / "not-trained-yet")}},
              "runs": [{"policy": "plain"}, {"policy": "single", "drafters": ["a"]},
                       {"policy": "single", "drafters": ["b"]}]}
    path = write_config(tmp_path, config)
    store = run_experiment(load_eval_config(path, "small"), tmp_path / "out", target, only=r"^(?!b$)")
    assert {k[0] for k in store.records} == {"plain", "a", "hf-generate"}
    with pytest.raises(ValueError, match="run b needs drafters not found here"):
        run_experiment(load_eval_config(path, "small"), tmp_path / "out", target)
    with pytest.raises(ValueError, match="no run id matches"):
        run_experiment(load_eval_config(path, "small"), tmp_path / "out", target, only="zzz")


def test_replayed_t0_records_equal_live_ones(tmp_path, bench_dir, target):
    """`replay: true`: T=0 engine records hold the live run's steps and tokens (no time); T>0 stays live. Prompts
    replay two at a time in lock step (lanes), so a benchmark's three make a full and a partial group."""
    config = {**CONFIG, "benchmarks": ["mt_bench", "gsm8k"], "baselines": [],
              "runs": [{"policy": "single", "drafters": ["a"]}, {"policy": "confidence", "drafters": ["a", "b"]},
                       {"policy": "sticky", "drafters": ["a", "b"]}]}
    live = run_experiment(load_eval_config(write_config(tmp_path, config), "wide"), tmp_path / "live", target)
    cfg = load_eval_config(write_config(tmp_path, {**config, "replay": True, "replay_lanes": 2}), "wide")
    replayed = run_experiment(cfg, tmp_path / "replayed", target)
    assert set(live.records) == set(replayed.records)
    for key, rec in replayed.records.items():
        other = live.records[key]
        for field in ("n_steps", "committed", "verified_nodes", "depth_reached", "depth_accepted", "selections"):
            assert rec[field] == other[field], (key, field)
        assert [t["token_ids"] for t in rec["turns"]] == [t["token_ids"] for t in other["turns"]]
        assert rec["mode"] == ("replay" if key[1] == 0.0 else "live") and (rec["seconds"] == 0) == (key[1] == 0.0)
    with pytest.raises(ValueError, match="different settings"):   # replayed and live records never mix
        run_experiment(cfg, tmp_path / "live", target)


def test_live_lanes_record_what_one_prompt_at_a_time_records(tmp_path, bench_dir, target):
    """`live_lanes: 2`: live prompts decode in lock step (3 prompts x 2 seeds per benchmark, two at a time); each
    record holds the tokens and steps of decoding its prompt alone with its sampling seed, and says it shared a
    batch (its seconds are its share of the batch's). With `path_verification` too, the same steps again, and no
    time (the target ran on the accepted paths only)."""
    config = {**CONFIG, "benchmarks": ["mt_bench", "svamp"], "baselines": ["generate"], "temperatures": [1.0],
              "seeds": 2, "runs": [{"policy": "confidence", "drafters": ["a", "b"]},
                                   {"policy": "sticky", "drafters": ["a", "b"]}]}
    alone = run_experiment(load_eval_config(write_config(tmp_path, config), "wide"), tmp_path / "alone", target)
    cfg = load_eval_config(write_config(tmp_path, {**config, "live_lanes": 2}), "wide")
    together = run_experiment(cfg, tmp_path / "together", target)
    assert set(alone.records) == set(together.records) and len(together.records) == 3 * 2 * 2 * 3
    for key, rec in together.records.items():
        other = alone.records[key]
        for field in ("n_steps", "committed", "verified_nodes", "selections"):
            assert rec[field] == other[field], (key, field)
        assert [t["token_ids"] for t in rec["turns"]] == [t["token_ids"] for t in other["turns"]]
        assert rec["seconds"] > 0 and "lanes" not in other
        assert rec.get("lanes") == (None if key[0] == "hf-generate" else 2)
    cfg = load_eval_config(write_config(tmp_path, {**config, "live_lanes": 3, "path_verification": True}), "wide")
    walked = run_experiment(cfg, tmp_path / "walked", target)   # the target on the accepted paths only
    for key, rec in walked.records.items():
        assert [t["token_ids"] for t in rec["turns"]] == [t["token_ids"] for t in alone.records[key]["turns"]]
        assert rec["committed"] == alone.records[key]["committed"]
        baseline = key[0] == "hf-generate"
        assert rec["mode"] == ("live" if baseline else "path") and (rec["seconds"] > 0) == baseline


def test_a_report_of_some_benchmarks_leaves_the_others_out(tmp_path, bench_dir, target):
    """`taps eval --benchmark B --report-only`: the tables of benchmarks whose records are complete, while the others
    are still running."""
    config = {**CONFIG, "baselines": [], "temperatures": [0.0], "runs": [{"policy": "single", "drafters": ["a"]}]}
    cfg, out = evaluated(tmp_path, config, target)
    assert len({r["benchmark"] for r in json.loads((out / "records.json").read_text())}) == 4
    write_report(cfg.only(["gsm8k"]), out, "taps eval --benchmark gsm8k --report-only", ENV)
    assert {r["benchmark"] for r in json.loads((out / "records.json").read_text())} == {"gsm8k"}
    assert "svamp" not in (out / "README.md").read_text().lower()
    with pytest.raises(ValueError, match="not in this experiment"):
        cfg.only(["gsm8k"]).only(["svamp"])


def test_intervals_cover_tau_and_paired_differences_resample_prompts_jointly():
    from taps_engine.evaluation.intervals import paired_difference, tau_interval

    recs = [{"benchmark": "gsm8k", "item": str(i), "committed": 20 + i % 5, "n_steps": 10} for i in range(40)]
    lo, hi = tau_interval(recs)
    tau = sum(r["committed"] for r in recs) / sum(r["n_steps"] for r in recs)
    assert lo < tau < hi and hi - lo < 0.3
    shifted = [{**r, "committed": r["committed"] + 1} for r in recs]   # every prompt +0.1 τ: paired CI is tight
    result = paired_difference(recs, shifted)
    assert result["difference"] == pytest.approx(0.1) and result["excludes_zero"]
    assert result["ci"][1] - result["ci"][0] < 0.02
    noisy = [{**r, "committed": r["committed"] + (1 if i % 2 else -1)} for i, r in enumerate(recs)]
    assert not paired_difference(recs, noisy)["excludes_zero"]
    assert tau_interval(recs[:1]) is None and paired_difference(recs, recs[:1]) is None


def test_a_paired_speed_ratio_resamples_prompts_jointly():
    from taps_engine.evaluation.intervals import paired_ratio

    tokens = [96.0] * 20
    seconds = [2.0 + (i % 7) for i in range(20)]                  # prompts differ in speed 4-fold
    faster = paired_ratio((tokens, seconds), (tokens, [s / 1.25 for s in seconds]))
    assert faster["ratio"] == pytest.approx(1.25) and faster["ci"][1] - faster["ci"][0] < 1e-6
    jitter = [s * (1.1 if i % 2 else 0.9) for i, s in enumerate(seconds)]
    level = paired_ratio((tokens, seconds), (tokens, jitter))
    assert level["ci"][0] < 1 < level["ci"][1] and level["n_prompts"] == 20
    assert paired_ratio(([1.0], [1.0]), ([1.0], [1.0])) is None


def test_samples_of_one_prompt_are_resampled_together():
    """At T>0 a prompt's seeds are one unit: three identical samples per prompt give the interval of one sample
    per prompt (treating them as independent would narrow it about sqrt(3)-fold), and a difference counts prompts."""
    from taps_engine.evaluation.intervals import paired_difference, tau_interval

    once = [{"benchmark": "gsm8k", "item": str(i), "committed": 20 + 3 * (i % 5), "n_steps": 10} for i in range(20)]
    thrice = [{**r, "item": r["item"] + suffix} for r in once for suffix in ("", "~1", "~2")]
    lo, hi = tau_interval(once)
    assert tau_interval(thrice) == pytest.approx((lo, hi), abs=1e-9)
    independent = tau_interval([{**r, "benchmark": f"{r['item']}"} for r in thrice])   # 60 distinct prompts
    assert independent[1] - independent[0] < 0.75 * (hi - lo)
    result = paired_difference(thrice, [{**r, "committed": r["committed"] + 1} for r in thrice])
    assert (result["n_prompts"], result["n_samples"]) == (20, 60)


def test_auc_and_oracle_summary_from_counts():
    from taps_engine.evaluation.routing import auc, oracle_summary

    assert auc([0, 0, 5], [5, 0, 0]) == 1.0 and auc([5, 0, 0], [0, 0, 5]) == 0.0
    assert auc([2, 2, 2], [1, 1, 1]) == pytest.approx(0.5) and auc([0, 0, 0], [1, 1, 1]) is None
    assert auc([0, 4, 0], [2, 0, 2]) == pytest.approx(0.5)
    recs = [{"oracle": {"steps": 10, "chosen": 25, "oracle": 30, "drafters": {"a": 20, "b": 24}}},
            {"oracle": None}]
    summary = oracle_summary(recs)
    assert (summary["tau_chosen"], summary["tau_oracle"], summary["best_fixed"]) == (2.5, 3.0, 2.4)
    assert summary["share_of_oracle_gain"] == pytest.approx(1 / 6, abs=1e-3)
    assert oracle_summary([{"oracle": None}]) is None


def test_node_totals_sum_the_depths_and_read_records_that_carry_the_total():
    from taps_engine.evaluation.routing import node_totals

    def hist(i: int) -> list[int]:
        return [1 if j == i else 0 for j in range(20)]

    by_depth = {str(d): {"accepted": {"confidence": hist(19 - d), "entropy": hist(d)},
                         "rejected": {"confidence": hist(0), "entropy": hist(9)}} for d in (1, 2)}
    total = {"accepted": {"confidence": [a + b for a, b in zip(hist(18), hist(17))],
                          "entropy": [a + b for a, b in zip(hist(1), hist(2))]},
             "rejected": {"confidence": [2 * x for x in hist(0)], "entropy": [2 * x for x in hist(9)]}}
    assert node_totals([{"nodes_by_depth": by_depth}]) == total
    older = {"nodes": total, "nodes_by_depth": by_depth}   # written before records kept depths only: counted once
    doubled = {kind: {stat: [2 * x for x in h] for stat, h in stats.items()} for kind, stats in total.items()}
    assert node_totals([older, {"nodes_by_depth": by_depth}, {"nodes_by_depth": {}}]) == doubled


def test_replayed_report_has_the_oracle_the_separation_and_mt_bench_categories(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["mt_bench", "gsm8k"], "temperatures": [0.0], "baselines": [],
              "replay": True, "runs": [{"policy": "single", "drafters": ["a"]},
                                       {"policy": "confidence", "drafters": ["a", "b"]}]}
    _, out = evaluated(tmp_path, config, target)
    rows = json.loads((out / "records.json").read_text())
    routed = [r for r in rows if r["policy"] == "confidence"]
    assert routed and all(r["oracle"]["steps"] == r["n_steps"] for r in routed)
    assert all(r["oracle"]["tau_oracle"] >= max(r["oracle"]["tau_drafters"].values()) for r in routed)
    assert all(r["oracle"]["tau_chosen"] == r["tau"] for r in routed)
    assert all(r["oracle"] is None for r in rows if r["policy"] == "single")
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and all("nodes" not in r for r in records)   # kept per depth only; the report sums them
    for row in rows:   # every verified draft node lands in one histogram bin, accepted or rejected
        counted = sum(sum(row["nodes"][kind]["confidence"]) for kind in ("accepted", "rejected"))
        assert counted == sum(r["verified_nodes"] for r in records
                              if (r["run"], r["benchmark"]) == (row["run"], row["benchmark"])) > 0
    separation = json.loads((out / "separation.json").read_text())
    assert {r["depth"] for r in separation} == {1, 2}
    assert all(r["accepted"] + r["rejected"] > 0 for r in separation)
    categories = json.loads((out / "categories.json").read_text())
    assert {(r["category"], r["n_prompts"]) for r in categories} == {("writing", 2)}
    readme = (out / "README.md").read_text()
    assert "Routing against an oracle" in readme and "confidence AUC" in readme and "writing (2)" in readme


def test_report_gives_the_weight_distance_of_averaged_parents(tmp_path, bench_dir, target):
    from taps_engine.head import DraftHead, weight_distance

    a, b = (DraftHead.random(target.model, seed=s) for s in (0, 1))
    assert weight_distance(a, a) == 0 and 0 < weight_distance(a, b) == pytest.approx(weight_distance(b, a))
    config = {**CONFIG, "benchmarks": ["gsm8k"], "temperatures": [0.0], "baselines": [],
              "runs": [{"policy": "average", "drafters": ["a", "b"], "alphas": [0.5]}]}
    _, out = evaluated(tmp_path, config, target, report_target=target)
    distances = json.loads((out / "averaging.json").read_text())
    assert distances == [{"parents": ["a", "b"], "distance": round(weight_distance(a, b), 4)}]
    assert "Parents of the averaged drafters" in (out / "README.md").read_text()


def test_report_gives_intervals_and_the_configured_comparisons(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["gsm8k", "svamp"], "temperatures": [0.0], "baselines": [],
              "runs": [{"policy": "single", "drafters": ["a"]}, {"policy": "confidence", "drafters": ["a", "b"]}],
              "comparisons": [["a", "confidence(a+b)"]]}
    _, out = evaluated(tmp_path, config, target)
    differences = json.loads((out / "comparisons.json").read_text())
    assert [(d["benchmark"], d["n_prompts"]) for d in differences] == [("gsm8k", 2), ("svamp", 2), ("all", 4)]
    readme = (out / "README.md").read_text()
    assert "Paired differences of τ" in readme and "confidence(a+b) − a" in readme
    bad = load_eval_config(write_config(tmp_path, {**config, "comparisons": [["a", "nope"]]}), "small")
    with pytest.raises(ValueError, match="unknown run ids \\['nope'\\]"):
        write_report(bad, out, "taps eval", {})


def test_prompts_drawn_with_a_seed_are_reproducible_and_per_benchmark(tmp_path, bench_dir):
    from taps_engine.evaluation.runner import config_items

    config = {**CONFIG, "benchmarks": ["gsm8k", "mt_bench"], "n_prompts": {"gsm8k": 2, "mt_bench": 3},
              "prompt_seed": 7}
    cfg = load_eval_config(write_config(tmp_path, config))
    first, again = config_items(cfg), config_items(cfg)
    assert {b: [i.id for i in v] for b, v in first.items()} == {b: [i.id for i in v] for b, v in again.items()}
    assert len(first["gsm8k"]) == 2 and len(first["mt_bench"]) == 3
    with pytest.raises(ValueError, match="n_prompts names benchmarks not run"):
        load_eval_config(write_config(tmp_path, {**config, "n_prompts": {"svamp": 2}}))


def test_sampled_runs_get_one_record_per_seed_and_greedy_ones_one(tmp_path, bench_dir, target):
    config = {**CONFIG, "benchmarks": ["gsm8k"], "baselines": [], "seeds": 3,
              "runs": [{"policy": "single", "drafters": ["a"]}]}
    cfg = load_eval_config(write_config(tmp_path, config), "small")
    store = run_experiment(cfg, tmp_path / "out", target)
    greedy = {k[3] for k in store.records if k[1] == 0.0}
    assert len(greedy) == 2
    assert {k[3] for k in store.records if k[1] == 1.0} == {f"{i}{s}" for i in greedy for s in ("", "~1", "~2")}
    first = sorted(greedy)[0]
    texts = [tuple(store.records[("a", 1.0, "gsm8k", first + s)]["turns"][0]["token_ids"]) for s in ("", "~1", "~2")]
    assert len(set(texts)) > 1, "each sample has its own seed"
    rows = write_report(cfg, tmp_path / "out", "taps eval", ENV)
    records = json.loads((tmp_path / "out" / "records.json").read_text())
    assert {(r["temperature"], r["n_prompts"], r["n_samples"]) for r in records} == {(0.0, 2, 2), (1.0, 2, 6)}
    assert rows


def test_replay_references_are_kept_and_reused(tmp_path, bench_dir, target, monkeypatch):
    from taps_engine import replay

    monkeypatch.setenv("TAPS_HOME", str(tmp_path / "home"))
    refs = replay.References(target, 6, 4)
    messages = [{"role": "user", "content": "Hello there"}]
    first = refs(messages)
    assert len(list((tmp_path / "home" / "references").glob("*.safetensors"))) == 1
    decoded = []
    real = replay.references_batch
    monkeypatch.setattr(replay, "references_batch", lambda t, prompts, *a: decoded.append(len(prompts)) or
                        real(t, prompts, *a))
    again = replay.References(target, 6, 4)(messages)
    assert decoded == [], "recomputed instead of read back"
    assert again.prompt_ids == first.prompt_ids and again.continuation == first.continuation
    assert torch.equal(again.features, first.features)
    others = [[{"role": "user", "content": f"Question {i}"}] for i in range(3)]
    many = replay.References(target, 6, 4).many([messages, *others, others[0]])   # the missing ones, once, together
    assert decoded == [3] and many[1] is many[4] and many[0].continuation == first.continuation
