"""Drafters keep their own KV cache in step with committed tokens and never re-process a committed pair."""

import pytest

from taps_engine import Decoder, DraftHead, TreeSettings
from tiny import oracle_head, tiny_target


@pytest.mark.parametrize("policy", ["single", "confidence", "merged-trie", "sticky", "probe"])
def test_heads_process_each_committed_pair_once(policy):
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    heads = {"oracle": oracle_head(target), "random": DraftHead.random(target.model, seed=3)}
    decoder = Decoder(target, heads, policy, TreeSettings(16, 4, 3))
    catch_ups = {name: [] for name in heads}
    for name, drafter in decoder.drafters.items():
        def record(module, args, kwargs, name=name):
            if kwargs.get("attention_mask") is None:  # catch-up over committed pairs (drafting passes a tree mask)
                catch_ups[name].append((kwargs["cache"].get_seq_length(), args[0].shape[1]))
        drafter.head.register_forward_pre_hook(record, with_kwargs=True)
    prompt = [0, 5, 9, 14, 22, 31]
    result = decoder.generate(prompt, max_new_tokens=30, stop_on_eos=False)
    assert any(s.accepted >= 2 for s in result.steps)
    for name, drafter in decoder.drafters.items():
        calls = catch_ups[name]
        if not calls:
            continue  # a sticky policy may never consult a drafter after the prompt
        done = 0
        for cached, new in calls:
            assert cached == done, "a catch-up starts exactly where the previous one ended"
            done += new
        assert drafter.processed == done == drafter.cached_pairs
        pending = len(drafter.pending_tokens)
        # one pair per committed token after the first: prompt[1:], the prefill token, then each step's tokens
        assert done + pending == len(prompt) - 1 + 1 + sum(s.acceptance_length for s in result.steps)


@pytest.mark.parametrize("policy", ["single", "sticky", "probe", "confidence"])
def test_step_records_name_the_drafter_that_drafted(policy):
    target = tiny_target("qwen3", seed=2)
    heads = {"a": DraftHead.random(target.model, seed=1), "b": DraftHead.random(target.model, seed=2)}
    result = Decoder(target, heads, policy, TreeSettings(8, 3, 2)).generate([0, 4, 8], max_new_tokens=10, drafter=(
        "b" if policy != "confidence" else None))
    for s in result.steps:
        assert set(s.node_drafter) == set(s.drafters) and len(s.drafters) == 1
    if policy != "confidence":
        assert all(s.drafters == ["b"] for s in result.steps)
