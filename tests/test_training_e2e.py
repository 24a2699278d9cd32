"""End to end on a tiny random target: data set from fixtures -> feature cache -> EAGLE-2 / HASS training."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from taps_engine import Decoder, PlainDecoder, TreeSettings, load_head
from training import features as features_module
from training import trainer as trainer_module
from training.config import RunConfig, load_config
from training.data import build_dataset
from training.features import cache_features, is_usable, load_examples, read_manifest, target_features
from training.trainer import (_vocab_losses, alignment_mask, batch_losses, loss_vocabulary, train,
                              with_soft_targets)
from tiny import FIXTURES, tiny_chat_target

def run_config(method: str, epochs: int, **train) -> RunConfig:
    stages = [{"epochs": epochs, "lr": 3e-3}] if method == "eagle2" else \
        [{"epochs": epochs - 1, "lr": 3e-3}, {"epochs": 1, "lr": 1e-3, "topk_weight": 1.0}]
    return RunConfig.model_validate({
        "name": f"tiny-{method}", "method": method, "target": "tiny",
        "data": {"kind": "mixed", "n_math": 6, "n_chat": 3, "seed": 1, "max_length": 96,
                 "chat_path": str(FIXTURES / "sharegpt_truncated.json")},
        "train": {"stages": stages, "batch_tokens": 200, "warmup_steps": 2, "heldout_fraction": 0.2, **train}})


def build(cfg: RunConfig, target):
    d = cfg.data
    examples, _ = build_dataset(d.kind, d.n_math, d.n_chat, d.seed, chat_path=d.chat_path)
    return cache_features(target, examples, cfg.features_dir, d.max_length, shard_size=4, progress=False)


@pytest.mark.parametrize("method,arch,losses", [("eagle2", "llama", {}),
                                                ("hass", "qwen3", {"draft_vocab": 512, "ce_vocab": "draft"})])
def test_train_resume_and_decode_losslessly(data_dir, tokenizer, method, arch, losses, monkeypatch):
    target = tiny_chat_target(arch, tokenizer)
    cfg = run_config(method, epochs=2, **losses)
    build(cfg, target)
    first = train(cfg, target, progress=False)["epochs"]
    assert len(first) == 2
    longer = run_config(method, epochs=4, **losses)
    build(longer, target)  # complete cache: nothing recomputed
    log = train(longer, target, progress=False)["epochs"]
    assert log[:2] == first, "resume continues from the checkpoint instead of retraining"
    assert len(log) == 4
    # a finished run returns its log without computing the held-out targets again
    monkeypatch.setattr(trainer_module, "target_choices", lambda *args: pytest.fail("held-out targets recomputed"))
    assert train(longer, target, progress=False)["epochs"] == log
    assert log[-1]["feature"] < log[0]["feature"] and log[-1]["ce"] < log[0]["ce"]  # HASS adds a top-K term later
    if method == "hass":
        assert log[-1]["topk"] > 0 and log[0]["topk"] == 0
    head = load_head(longer.drafter_dir, target.model)
    decoder = Decoder(target, {"trained": head}, "single", TreeSettings(8, 3, 2))
    plain = PlainDecoder(target)
    for prompt in ("Tom has 3 apples.", "Solve x + 1 = 2."):
        messages = [{"role": "user", "content": prompt}]
        assert decoder.generate(messages, max_new_tokens=16).token_ids == plain.generate(messages, max_new_tokens=16).token_ids


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_features_of_a_padded_forward_are_each_sequences_own(tokenizer, arch):
    """Sequences of different lengths share a forward without a padding mask: right padding is never read by a
    real position under causal attention, so each keeps the features of its own forward."""
    target = tiny_chat_target(arch, tokenizer)
    g = torch.Generator().manual_seed(0)
    sequences = [torch.randint(5, 90, (n,), generator=g).tolist() for n in (7, 19, 12, 30)]
    together = target_features(target, sequences, batch_tokens=4096)
    for sequence, features in zip(sequences, together):
        alone = target_features(target, [sequence], batch_tokens=4096)[0]
        assert features.shape == (len(sequence), 64)
        torch.testing.assert_close(features, alone, rtol=1e-5, atol=1e-5)


def test_interrupted_feature_run_leaves_no_corrupt_shard_and_resumes(data_dir, tokenizer, monkeypatch):
    target = tiny_chat_target("llama", tokenizer)
    cfg = run_config("eagle2", epochs=1)
    calls = {"n": 0}
    real_save = features_module.save_file

    def crash_on_second(tensors, path):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"partial")
            raise KeyboardInterrupt
        real_save(tensors, path)

    monkeypatch.setattr(features_module, "save_file", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        build(cfg, target)
    directory = cfg.features_dir
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "shard-00000.safetensors"]
    with pytest.raises(ValueError, match="incomplete; rerun `taps features`"):
        read_manifest(directory)
    monkeypatch.setattr(features_module, "save_file", real_save)
    build(cfg, target)
    assert len(list(load_examples(directory))) == 9


def test_alignment_mask_structure():
    assert torch.equal(alignment_mask(5, 1), torch.ones(5, 5).tril().bool())
    mask = alignment_mask(6, 3)
    assert mask.shape == (6, 18)
    row = mask[5]
    assert row[:6].nonzero().flatten().tolist() == [0, 1, 2, 3]   # target-fed keys up to t - 2
    assert row[6:12].nonzero().flatten().tolist() == [4]          # pass 2 key at t - 1
    assert row[12:].nonzero().flatten().tolist() == [5]           # pass 3 key at t
    assert mask[0].nonzero().flatten().tolist() == [12]           # position 0 sees only itself
    assert bool(mask.any(-1).all())


@pytest.mark.parametrize("passes", [1, 3])
def test_hass_pass_count_and_shapes(data_dir, tokenizer, passes):
    target = tiny_chat_target("llama", tokenizer)
    cfg = run_config("hass", epochs=2)
    build(cfg, target)
    examples = list(load_examples(cfg.features_dir))[:2]
    from taps_engine import DraftHead

    head = DraftHead.for_target(target.model)
    seen = []
    head.register_forward_hook(lambda m, args, kwargs, out: seen.append(
        (args[0].shape, kwargs["attention_mask"] is None, kwargs["cache"].get_seq_length())), with_kwargs=True)
    terms = batch_losses(head, target.model.get_input_embeddings(), target.model.get_output_embeddings(),
                         examples, cfg.train, passes, 1.0, torch.Generator().manual_seed(0))
    n = max(ex.input_ids.shape[0] for ex in examples) - 1
    assert len(seen) == passes
    assert [s[0] for s in seen] == [torch.Size([2, n, 64])] * passes
    assert [s[2] for s in seen] == [n * j for j in range(1, passes + 1)]  # keys of every earlier pass are kept
    assert seen[0][1] and all(not s[1] for s in seen[1:])
    terms.total.backward()
    assert head.fc.weight.grad is not None and terms.parts["topk"] > 0


def draft_vocabulary_head(target):
    """A fresh head with a random 512-token draft vocabulary, the target's embedding and its LM head's rows there."""
    from taps_engine import DraftHead

    torch.manual_seed(0)
    head = DraftHead.for_target(target.model)
    head.set_draft_vocab(torch.randperm(target.config.vocab_size)[:512])
    return head, target.model.get_input_embeddings(), loss_vocabulary(target.model.get_output_embeddings(),
                                                                      head.draft_vocab)


@pytest.mark.parametrize("passes", [1, 3])
def test_a_padded_batch_computes_each_example_as_if_alone(data_dir, tokenizer, passes):
    """Right padding never reaches a real position (causal and alignment masks alike): a batch's loss and gradient
    are its examples' own, weighted by length."""
    target = tiny_chat_target("llama", tokenizer)
    cfg = run_config("hass", epochs=2, noise=0.0, draft_vocab=512, ce_vocab="draft")
    build(cfg, target)
    examples = sorted(load_examples(cfg.features_dir), key=lambda ex: ex.input_ids.shape[0])[::3][:3]
    assert len({ex.input_ids.shape[0] for ex in examples}) == 3
    head, embed, lm_head = draft_vocabulary_head(target)

    def losses(batch):
        head.zero_grad()
        terms = batch_losses(head, embed, lm_head, batch, cfg.train, passes, 1.0, torch.Generator())
        terms.total.backward()
        return terms, head.fc.weight.grad.clone()

    together, grad = losses(examples)
    alone = [losses([ex]) for ex in examples]
    lengths = [ex.input_ids.shape[0] / sum(e.input_ids.shape[0] for e in examples) for ex in examples]
    expected = sum(w * float(t.total.detach()) for w, (t, _) in zip(lengths, alone))
    assert float(together.total.detach()) == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(grad, sum(w * g for w, (_, g) in zip(lengths, alone)), rtol=1e-4, atol=1e-6)
    for part in ("loss", "feature", "ce", "topk"):
        assert together.parts[part] == pytest.approx(sum(t.parts[part] for t, _ in alone), rel=1e-5)


@pytest.mark.parametrize("ce_fraction", [1.0, 0.5])
def test_cached_soft_targets_give_the_recomputed_losses_up_to_their_tail(data_dir, tokenizer, ce_fraction):
    """Soft targets cached once (`ce_targets_topk`): with every draft token kept, a batch's losses and gradient are
    those of the distribution recomputed at the step (the same positions drawn when only a fraction get vocabulary
    losses); with K tokens kept, the cross-entropy loses exactly the terms of the other tokens and the top-K term
    is unchanged."""
    target = tiny_chat_target("llama", tokenizer)
    cfg = run_config("hass", epochs=2, draft_vocab=512, ce_vocab="draft", ce_fraction=ce_fraction)
    build(cfg, target)
    examples = sorted(load_examples(cfg.features_dir), key=lambda ex: ex.input_ids.shape[0])[::3][:3]
    head, embed, lm_head = draft_vocabulary_head(target)

    def losses(batch):
        head.zero_grad()
        terms = batch_losses(head, embed, lm_head, batch, cfg.train, 1, 1.0, torch.Generator().manual_seed(3))
        terms.total.backward()
        return terms, head.fc.weight.grad.clone()

    recomputed, grad = losses(examples)
    kept_all, grad_all = losses(with_soft_targets(examples, lm_head, 512, bf16=False, group_rows=7))
    assert kept_all.parts == pytest.approx(recomputed.parts, rel=1e-5)
    assert torch.allclose(grad_all, grad, rtol=1e-4, atol=1e-7)
    few = with_soft_targets(examples, lm_head, 16, bf16=False)
    assert [ex.soft_targets[0].shape for ex in few] == [(int(ex.loss_mask[1:].sum()), 16) for ex in examples]
    kept_few, _ = losses(few)
    assert kept_few.parts["topk"] == pytest.approx(recomputed.parts["topk"], rel=1e-5)
    assert 0 < kept_few.parts["ce"] < recomputed.parts["ce"]
    with pytest.raises(ValueError, match=r"ce_targets_topk \(4\) must keep at least the top-K term's topk \(10\)"):
        run_config("hass", epochs=2, ce_targets_topk=4)


def test_draft_vocabulary_losses_are_the_renormalized_soft_cross_entropy_over_its_tokens():
    """ce_vocab 'draft': the target's distribution over the draft tokens, renormalized, against the head's."""
    g = torch.Generator().manual_seed(0)
    lm_head = torch.nn.Linear(16, 50, bias=False)
    torch.nn.init.normal_(lm_head.weight, generator=g)
    head_out, target_feat = torch.randn(7, 16, generator=g), torch.randn(7, 16, generator=g)
    ids = torch.tensor([41, 3, 17, 8, 29, 0, 33, 12, 47, 5, 20, 38])
    cfg = run_config("hass", epochs=2, ce_chunk=3).train
    total, ce, topk = (v.mean() for v in _vocab_losses(head_out, target_feat, loss_vocabulary(lm_head, ids), cfg,
                                                       topk_weight=0.5))
    with torch.no_grad():
        full_p, full_logq = torch.softmax(lm_head(target_feat), -1), torch.log_softmax(lm_head(head_out), -1)
        p = full_p[:, ids] / full_p[:, ids].sum(-1, keepdim=True)
        logq = full_logq[:, ids] - torch.logsumexp(full_logq[:, ids], -1, keepdim=True)
        expected_ce = -(p * logq).sum(-1).mean()
        top_p, top_i = p.topk(cfg.topk, -1)
        expected_topk = -(top_p * logq.gather(-1, top_i)).sum(-1).mean()
    assert float(ce) == pytest.approx(float(expected_ce), rel=1e-5)
    assert float(topk) == pytest.approx(float(expected_topk), rel=1e-5)
    assert float(total.detach()) == pytest.approx(float(cfg.ce_weight * expected_ce + 0.5 * expected_topk), rel=1e-5)
    assert loss_vocabulary(lm_head, None) is lm_head
    with pytest.raises(ValueError, match=r"ce_vocab 'draft' needs a draft vocabulary \(draft_vocab > 0\)"):
        run_config("eagle2", epochs=1, ce_vocab="draft")


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\nmethod: medusa\ndata: {kind: math}\n")
    with pytest.raises(ValueError, match=r"c.yaml: method: Input should be 'eagle2' or 'hass'.*data: "
                                         r"data kind 'math' needs n_math > 0"):
        load_config(bad)
    bad.write_text("name: x\nmethod: eagle2\ndata: {kind: math, n_math: 5}\ntrain: {lr: 0.1}\n")
    with pytest.raises(ValueError, match="train.lr: Extra inputs are not permitted"):
        load_config(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_validate():
    """Every shipped config loads with the loader of its kind (training, evaluation with each profile, serving)."""
    from services.config import load_serve_config
    from taps_engine.evaluation.config import load_eval_config

    root = Path(__file__).parents[1] / "configs"
    training = sorted(p for d in ("smollm2", "llama3-8b", "gemma3-270m") for p in (root / d).glob("*.yaml"))
    assert len(training) >= 6
    for path in training:
        load_config(path)
    for path in sorted((root / "eval").glob("*.yaml")):
        for profile in (None, *yaml.safe_load(path.read_text()).get("profiles", {})):
            load_eval_config(path, profile)
    for path in sorted((root / "serve").glob("*.yaml")):
        load_serve_config(path)
    kinds = {p.parent.name for p in root.rglob("*.yaml")}
    assert kinds == {"smollm2", "llama3-8b", "gemma3-270m", "eval", "serve"}, \
        f"a config folder without a validation test: {kinds}"


def test_init_from_starts_at_a_trained_head_and_refuses_foreign_ones(data_dir, tokenizer, tmp_path):
    target = tiny_chat_target("llama", tokenizer)
    base = run_config("eagle2", epochs=2)
    build(base, target)
    fresh_log = train(base, target, progress=False)["epochs"]
    tuned = RunConfig.model_validate({**base.model_dump(), "name": "tiny-tuned", "init_from": str(base.drafter_dir),
                                      "output_dir": str(tmp_path / "tuned")})
    tuned_log = train(tuned, target, progress=False)["epochs"]
    # its first epoch starts where the base head ended, far below a fresh head's first epoch
    assert tuned_log[0]["feature"] < fresh_log[0]["feature"]
    assert tuned_log[0]["feature"] <= fresh_log[-1]["feature"] * 1.2

    other = json.loads((base.drafter_dir / "config.json").read_text())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes((base.drafter_dir / "model.safetensors").read_bytes())
    (foreign / "config.json").write_text(json.dumps({**other, "target": "another-model"}))
    with pytest.raises(ValueError, match="a head for target 'another-model', not 'tiny'"):
        train(RunConfig.model_validate({**tuned.model_dump(), "init_from": str(foreign),
                                        "output_dir": str(tmp_path / "x")}), target, progress=False)
    from taps_engine.head import weights_digest
    from training.cli import provenance

    shipped = provenance(tuned, "tuned.yaml", {"epochs": tuned_log}, 0)
    assert shipped["epochs"] == len(tuned_log) and shipped["init_from"]["path"] == str(base.drafter_dir)
    assert shipped["init_from"]["weights_sha256"] == weights_digest(base.drafter_dir) is not None
    assert "init_from" not in provenance(base, "base.yaml", {"epochs": fresh_log}, 0)
    small = tiny_chat_target("qwen3", tokenizer)   # same hidden size, another architecture's layer shapes
    with pytest.raises(ValueError, match="init_from|does not fit|does not match"):
        train(RunConfig.model_validate({**tuned.model_dump(), "output_dir": str(tmp_path / "y")}), small,
              progress=False)


def test_self_distillation_is_deterministic_resumes_and_marks_cut_replies(data_dir, tokenizer, tmp_path, monkeypatch):
    from training import distill as distill_module
    from training.data import TRUNCATED, conversation_key, render
    from training.distill import distill

    target = tiny_chat_target("llama", tokenizer)
    with torch.no_grad():  # sharper logits: at the default init scale a random model repeats one newline token
        for p in target.model.parameters():
            p.mul_(8)
    examples, _ = build_dataset("mixed", 6, 3, seed=1, chat_path=FIXTURES / "sharegpt_truncated.json")
    first, report, timing, known = distill(target, examples, max_length=96, answer_tokens=16,
                                           cache_dir=tmp_path / "a", batch_size=4, progress=False)
    assert report.loaded == len(first) > 0
    assert timing["prompts"] >= len(first) and 0 < timing["new_tokens"] <= 16 * timing["prompts"]
    for original, distilled in zip(examples, first):
        assert distilled[-1]["role"] == "assistant" and distilled[:-1] == distill_module.prompt_of(original)
    # a fresh run in another cache, interrupted after its first batch, resumes to the same answers
    calls = {"n": 0}
    real = distill_module._generate

    def crash_on_second(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(distill_module, "_generate", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        distill(target, examples, 96, 16, tmp_path / "b", batch_size=4, progress=False)
    assert sorted(p.suffix for p in (tmp_path / "b").iterdir()) == [".features", ".partial"]
    monkeypatch.setattr(distill_module, "_generate", real)
    again, _, resumed, known_again = distill(target, examples, 96, 16, tmp_path / "b", batch_size=4, progress=False)
    assert again == first
    assert known_again.keys() == known.keys() == {conversation_key(m) for m in first}
    assert all(torch.equal(known[k][1], known_again[k][1]) for k in known)
    # the time of a resumed generation counts the batches of both runs; a cache hit reports it again, as reused
    assert (resumed["prompts"], resumed["new_tokens"]) == (timing["prompts"], timing["new_tokens"])
    assert "reused" not in resumed
    assert distill(target, examples, 96, 16, tmp_path / "b", batch_size=4, progress=False)[2] == \
        {**resumed, "reused": True}
    assert sorted(p.suffix for p in (tmp_path / "b").iterdir()) == [".features", ".jsonl"]
    # the kept features are read when asked for: a run whose feature cache is complete reads none of them
    lazy = distill(target, examples, 96, 16, tmp_path / "b", batch_size=4, progress=False)[3]
    shutil.rmtree(next((tmp_path / "b").glob("*.features")))
    assert lazy.keys() == known.keys()
    with pytest.raises(FileNotFoundError):
        lazy[next(iter(lazy))]
    # a random tiny model rarely stops within 16 tokens: cut replies train no end-of-turn token
    cut = next(m for m in first if m[-1].get(TRUNCATED))
    ids, mask = render(tokenizer, cut, 96)
    whole, whole_mask = render(tokenizer, cut[:-1] + [{k: v for k, v in cut[-1].items() if k != TRUNCATED}], 96)
    assert ids == whole and sum(whole_mask) == sum(mask) + 1


def test_a_mixed_data_set_can_self_distil_one_source_only(data_dir, tokenizer, tmp_path):
    """answers: {math: target} replaces the math replies with the target's and keeps the chat ones, the same way
    each time, in a feature cache of its own. The distilled examples' features come from the generation's own
    forwards: those of one forward over each example, to float rounding, up to its last loss position."""
    import random

    from training.cli import _examples
    from training.data import draw_sources
    from training.distill import prompt_of

    target = tiny_chat_target("llama", tokenizer)
    with torch.no_grad():
        for p in target.model.parameters():
            p.mul_(8)
    base = run_config("eagle2", epochs=1)
    data = {**base.data.model_dump(), "answers": {"math": "target"}, "answer_tokens": 16}
    cfg = RunConfig.model_validate({**base.model_dump(), "data": data})
    assert cfg.data.distilled == ["math"] and cfg.data.answers_of("chat") == "dataset"
    drawn, _ = draw_sources("mixed", 6, 3, random.Random(1), chat_path=cfg.data.chat_path)
    examples, timing, known = _examples(cfg, target)
    assert 0 < timing["prompts"] <= 6
    assert sum(ex in drawn["chat"] for ex in examples) == 3 and not any(ex in drawn["math"] for ex in examples)
    math_prompts = [prompt_of(ex) for ex in drawn["math"]]
    assert sum(ex[:-1] in math_prompts for ex in examples) == len(examples) - 3
    assert _examples(cfg, target)[0] == examples
    d = cfg.data
    read = load_examples(cache_features(target, examples, tmp_path / "read", d.max_length, progress=False,
                                        known=known, store_dtype=torch.float32))
    forward = load_examples(cache_features(target, examples, tmp_path / "forward", d.max_length, progress=False,
                                           store_dtype=torch.float32))
    shortened = 0
    for mine, theirs in zip(read, forward):
        n = mine.input_ids.shape[0]
        shortened += n < theirs.input_ids.shape[0]
        assert torch.equal(mine.input_ids, theirs.input_ids[:n]) and torch.equal(mine.loss_mask, theirs.loss_mask[:n])
        assert not theirs.loss_mask[n:].any()
        # one-token forwards against one forward over the whole: fp32 rounding, grown by this test's scaled weights
        torch.testing.assert_close(mine.features, theirs.features[:n], rtol=1e-3, atol=1e-4)
    # a random model's replies often tokenize differently once decoded and rendered again: those get a forward
    assert 0 < shortened <= len(examples) - 3
    assert read_manifest(tmp_path / "read")["last_run"]["tokens_read_in_distillation"] > 0
    whole = RunConfig.model_validate({**cfg.model_dump(), "data": {**cfg.data.model_dump(), "answers": "target"}})
    assert len({base.features_dir, cfg.features_dir, whole.features_dir}) == 3
    with pytest.raises(ValueError, match="answers"):
        RunConfig.model_validate({**cfg.model_dump(), "data": {**cfg.data.model_dump(), "answers": {"code": "target"}}})


def test_an_example_trains_a_head_only_with_a_loss_position_and_three_tokens():
    assert is_usable([1, 2, 3], [0, 0, 1])
    assert not is_usable([1, 2, 3], [0, 0, 0])   # nothing to predict
    assert not is_usable([1, 2], [0, 1])         # too short to pair a feature with a later token


def test_batched_feature_forwards_match_one_sequence_per_forward(data_dir, tokenizer, tmp_path):
    """Batched forwards group the examples of several shards (shards of 2 here): one forward for all nine."""
    target = tiny_chat_target("qwen3", tokenizer)
    cfg = run_config("eagle2", epochs=1)
    d = cfg.data
    examples, _ = build_dataset(d.kind, d.n_math, d.n_chat, d.seed, chat_path=d.chat_path)
    solo = cache_features(target, examples, tmp_path / "solo", d.max_length, progress=False, batch_tokens=1,
                          store_dtype=torch.float32)
    rows: list[int] = []
    hook = target.model.get_decoder().register_forward_hook(
        lambda _, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        batched = cache_features(target, examples, tmp_path / "batched", d.max_length, progress=False,
                                 store_dtype=torch.float32, shard_size=2)
    finally:
        hook.remove()
    assert rows == [9]
    pairs = list(zip(load_examples(solo), load_examples(batched)))
    assert len(pairs) == 9 and len({len(a.input_ids) for a, _ in pairs}) > 1, "lengths differ: padding is exercised"
    for a, b in pairs:
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.loss_mask, b.loss_mask)
        torch.testing.assert_close(a.features, b.features, atol=1e-5, rtol=1e-4)
