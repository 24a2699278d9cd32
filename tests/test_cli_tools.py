"""The training and measurement commands, end to end through the CLI on a tiny model saved as a local directory."""

import json
from pathlib import Path
from dataclasses import asdict

import pytest
import torch
import yaml
from typer.testing import CliRunner

from taps_engine import Decoder, DraftHead, TreeSettings, load_head, save_head
from taps_engine.metrics import mean_acceptance_length
from taps_engine.cli_root import app
from tiny import FIXTURES, tiny_chat_target


@pytest.fixture
def model_dir(tmp_path, tokenizer):
    target = tiny_chat_target("llama", tokenizer)
    directory = tmp_path / "tiny-model"
    target.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_average_and_tau_commands(tmp_path, data_dir, model_dir, tokenizer):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({
        "name": "cli-eagle2", "method": "eagle2", "target": str(model_dir), "dtype": "fp32",
        "data": {"kind": "mixed", "n_math": 4, "n_chat": 2, "seed": 0, "max_length": 64,
                 "chat_path": str(FIXTURES / "sharegpt_truncated.json")},
        "train": {"stages": [{"epochs": 1, "lr": 0.001}], "batch_tokens": 128, "heldout_fraction": 0.2},
        "output_dir": str(tmp_path / "head")}))
    from taps_engine import load_target

    output = invoke("features", "--config", config)
    assert '"complete": true' in output and '"n_examples": 6' in output
    assert "cli-eagle2" in invoke("train", "--config", config)
    steps = json.loads((tmp_path / "head" / "train_log.json").read_text())["data_steps"]
    assert steps["self_distillation"] is None and steps["features"]["tokens"] > 0   # data-set replies: no distilling
    said = invoke("draft-vocab", "--config", config, "--size", 50, "--out", tmp_path / "head-v50")
    assert "draft vocabulary of 50 tokens" in " ".join(said.split())
    from training.config import load_config
    from training.features import assistant_token_counts

    counts = assistant_token_counts(load_config(config).features_dir, len(tokenizer))
    vocab = load_head(tmp_path / "head-v50", load_target(str(model_dir), dtype="fp32").model).draft_vocab
    assert vocab.numel() == 50 and counts[vocab].min() >= counts.sort(descending=True).values[49]
    exported = tmp_path / "shipped"
    invoke("export", "--config", config, "--out", exported, "--draft-vocab", 50)
    provenance = json.loads((exported / "train_log.json").read_text())["provenance"]
    assert provenance["draft_vocab"] == 50 and provenance["epochs"] == 1 and provenance["config_file"] == str(config)
    assert load_head(exported, load_target(str(model_dir), dtype="fp32").model).draft_vocab.equal(vocab)
    draft_losses = tmp_path / "draft-ce.yaml"
    settings = yaml.safe_load(config.read_text())
    settings["train"].update(ce_vocab="draft", draft_vocab=50)
    draft_losses.write_text(yaml.safe_dump(settings))
    refused = CliRunner().invoke(app, ["export", "--config", str(draft_losses), "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "export it with --draft-vocab 50" in " ".join(refused.output.split())
    assert not (tmp_path / "x").exists()
    other = tmp_path / "other"
    save_head(DraftHead.random(load_target(str(model_dir), dtype="fp32").model, seed=3), other)
    invoke("average", tmp_path / "head", other, "--out", tmp_path / "avg", "--sweep", "0,0.5,1",
           "--target", model_dir)
    assert sorted(p.name for p in (tmp_path / "avg").iterdir()) == ["alpha-0", "alpha-0.5", "alpha-1"]
    model = load_target(str(model_dir), dtype="fp32").model
    assert load_head(tmp_path / "avg" / "alpha-1", model).fc.weight.equal(load_head(other, model).fc.weight)

    gsm = data_dir / "gsm8k" / "test.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} + {i}?", "answer": "#### 0"}) + "\n"
                           for i in range(3)))
    out = tmp_path / "tau.json"
    invoke("bench", "tau", "--target", model_dir, "--drafter", f"trained={tmp_path / 'head'}", "--benchmark",
           "gsm8k", "--n", 2, "--max-new-tokens", 6, "--total-tokens", 8, "--depth", 3, "--top-k", 2, "--out", out)
    records = json.loads(out.read_text())
    assert len(records) == 1
    assert records[0]["method"] == "eagle2" and records[0]["drafter"] == "trained"
    assert records[0]["n_prompts"] == 2 and records[0]["tree"] == asdict(TreeSettings(8, 3, 2))
    # the recorded tau is the engine's own on the same prompts
    target = load_target(str(model_dir), dtype="fp32")
    decoder = Decoder(target, {"trained": load_head(tmp_path / "head", target.model)}, "single",
                      TreeSettings(8, 3, 2))
    results = [decoder.generate([{"role": "user", "content": f"What is {i} + {i}?"}], max_new_tokens=6, seed=i)
               for i in range(2)]
    assert records[0]["tau"] == round(mean_acceptance_length(results), 4)
    assert records[0]["n_steps"] == sum(len(r.steps) for r in results)


def chain_recipe(tmp_path: Path, model_dir: Path, name: str, epochs: int, threads: int | None = None,
                 **extra) -> Path:
    """A tiny training config written under tmp_path, for chains of `init_from` configs."""
    path = tmp_path / f"{name}.yaml"
    train = {"stages": [{"epochs": epochs, "lr": 0.001}], "batch_tokens": 128, "heldout_fraction": 0.2}
    path.write_text(yaml.safe_dump({
        "name": name, "method": "eagle2", "target": str(model_dir), "dtype": "fp32",
        "data": {"kind": "mixed", "n_math": 4, "n_chat": 2, "seed": 0, "max_length": 64,
                 "chat_path": str(FIXTURES / "sharegpt_truncated.json")},
        "train": train | ({"threads": threads} if threads else {}), "output_dir": str(tmp_path / name), **extra}))
    return path


def test_a_chained_recipe_trains_its_parents_first_and_records_them(tmp_path, data_dir, model_dir):
    """init_from naming a config: `taps train` on the last config runs the whole chain, reuses a parent already
    trained, and the export's provenance names each recipe and the weights it started from."""
    from taps_engine.head import weights_digest

    def recipe(name: str, epochs: int, **extra) -> Path:
        return chain_recipe(tmp_path, model_dir, name, epochs, **extra)

    first = recipe("first", 1)
    second = recipe("second", 1, init_from=str(first))
    third = recipe("third", 2, init_from=str(second))
    said = " ".join(invoke("train", "--config", third).split())
    assert f"training {first} first" in said and f"training {second} first" in said
    logs = [json.loads((tmp_path / n / "train_log.json").read_text()) for n in ("first", "second", "third")]
    assert [len(log["epochs"]) for log in logs] == [1, 1, 2]
    # one data set: the first recipe cached the features, the others reused them (a chain counts their time once)
    assert [log["data_steps"]["features"].get("reused", False) for log in logs] == [False, True, True]
    assert len({log["data_steps"]["features"]["seconds"] for log in logs}) == 1
    digest = weights_digest(tmp_path / "second")
    fourth = recipe("fourth", 1, init_from=str(second))
    assert "first" not in invoke("train", "--config", fourth)   # parents already trained are reused as they are
    assert weights_digest(tmp_path / "second") == digest

    from taps_engine import load_target   # the parent replaced in place after the child trained: the record holds
    save_head(DraftHead.random(load_target(str(model_dir), dtype="fp32").model, seed=5), tmp_path / "second")
    invoke("export", "--config", third, "--out", tmp_path / "shipped", "--draft-vocab", 0)
    chain = json.loads((tmp_path / "shipped" / "train_log.json").read_text())["provenance"]
    assert chain["config_file"] == str(third) and chain["init_from"]["weights_sha256"] == digest
    assert chain["init_from"]["provenance"]["config_file"] == str(second)
    assert chain["init_from"]["provenance"]["init_from"]["provenance"]["config_file"] == str(first)

    loop = recipe("loop", 1, init_from=str(tmp_path / "back.yaml"))
    recipe("back", 1, init_from=str(loop))
    refused = CliRunner().invoke(app, ["train", "--config", str(loop)])
    assert refused.exit_code == 2 and "goes round in a circle" in " ".join(refused.output.split())
    missing = CliRunner().invoke(app, ["train", "--config", str(recipe("orphan", 1, init_from="no/such.yaml"))])
    assert missing.exit_code == 2 and "no training config no/such.yaml to start from" in " ".join(missing.output.split())
    other = recipe("other-target", 1, target="another/model")
    foreign = CliRunner().invoke(app, ["train", "--config", str(recipe("foreign", 1, init_from=str(other)))])
    assert foreign.exit_code == 2 and "a recipe for target 'another/model'" in " ".join(foreign.output.split())


def test_bench_speed_reports_every_method_with_its_step_split(tmp_path, model_dir, monkeypatch):
    monkeypatch.setenv("TAPS_DATA_DIR", str(tmp_path / "no-data"))   # the built-in prompts
    monkeypatch.setenv("TAPS_HOME", str(tmp_path / "home"))          # the cost curve cache
    from taps_engine import load_target

    save_head(DraftHead.random(load_target(str(model_dir), dtype="fp32").model, seed=3), tmp_path / "h")
    out = tmp_path / "speed.json"
    with pytest.warns(UserWarning, match="built-in prompts"):
        invoke("bench", "speed", "--target", model_dir, "--drafter", f"h={tmp_path / 'h'}", "--policy", "single",
               "--policy", "merged-trie", "--tree", "6/2/2", "--tree", "8/1/3+cost", "--prompts", 1,
               "--max-new-tokens", 5, "--dtype", "fp32", "--out", out)
    report = json.loads(out.read_text())
    methods = [r["method"] for r in report["rows"]["all"]]
    assert methods == ["transformers generate", "transformers prompt-lookup", "engine plain", "single[h] 6/2/2",
                       "merged-trie 6/2/2", "single[h] 8/1/3+cost", "merged-trie 8/1/3+cost"]
    assert report["engines"]["single[h] 8/1/3+cost"]["calibration"] is not None
    assert report["benchmarks"] == ["gsm8k", "mt_bench"] and report["n_prompts"] == 2
    for row in report["rows"]["all"]:
        assert row["same_output_as_generate"] == 2, row["method"]   # every method decodes greedily, losslessly
        if row["method"].startswith(("single", "merged", "engine")):
            assert row["ms_verify"] > 0 and row["steps"] >= 2
    assert sorted(int(n) for n in report["verify_ms"]) == [1, 2, 4, 8, 16, 32, 64]
    assert report["machine"]["cpu"] and "native_bf16" in report["machine"]
    assert "| single[h] 6/2/2 |" in out.with_suffix(".md").read_text()


def test_demo_routes_between_the_given_heads_and_matches_plain_decoding(tmp_path, model_dir, monkeypatch):
    """`taps demo --drafter` (how a candidate is tried as a default) reports each prompt next to the plain loop; in
    fp32 the routed answer is plain greedy decoding's."""
    from taps_engine import load_target

    monkeypatch.setenv("COLUMNS", "250")   # the table on one line per row

    model = load_target(str(model_dir), dtype="fp32").model
    for seed, name in ((1, "a"), (2, "b")):
        save_head(DraftHead.random(model, seed=seed), tmp_path / name)
    output = invoke("demo", "--target", model_dir, "--drafter", f"a={tmp_path / 'a'}", "--drafter",
                    f"b={tmp_path / 'b'}", "--max-new-tokens", 6, "--dtype", "fp32")
    assert "policy probe over a, b, tree 32/4/4+cost" in output
    rows = [line for line in output.splitlines() if line.startswith(("│ math", "│ chat"))]
    assert len(rows) == 2 and all(row.rstrip(" │").endswith("True") for row in rows), output


def test_each_recipe_of_a_chain_caches_its_features_with_its_own_threads(tmp_path, data_dir, model_dir, monkeypatch):
    """A parent recipe's feature caching runs with the parent's thread count, not the last config's."""
    from training import features

    seen: list[int] = []
    cache = features.cache_features

    def observed(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return cache(*args, **kwargs)

    monkeypatch.setattr(features, "cache_features", observed)
    threads = torch.get_num_threads()
    try:
        parent = chain_recipe(tmp_path, model_dir, "parent", 1, threads=1)
        invoke("train", "--config", chain_recipe(tmp_path, model_dir, "child", 1, threads=2, init_from=str(parent)))
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 2]
