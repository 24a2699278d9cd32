"""Verification of several sequences in one forward: the slot KV cache, and `step_batch` against one step each."""

import pytest
import torch

from taps_engine.acceptance import SamplingParams
from taps_engine.drafter import Drafter
from taps_engine.head import DraftHead
from taps_engine.slots import SlotCache
from taps_engine.tree import TreeSettings
from taps_engine.verifier import TargetVerifier, step_batch, verify_batch
from tiny import tiny_target

PROMPTS = [[0, 4, 9, 13, 2, 7], [0, 5], [0, 8, 3, 3, 3, 3, 3, 3, 3, 11, 12], [0, 20, 21, 22]]


def filled(cache: SlotCache, slot: int, n: int, value: float) -> None:
    cache.prepare([slot], n)
    cache.update(torch.full((1, 2, n, 4), value), torch.full((1, 2, n, 4), -value), 0)
    cache.keep(slot, range(n))


def test_slots_keep_in_place_and_survive_growth():
    cache = SlotCache(num_layers=1)
    a = cache.allocate()
    filled(cache, a, 3, 1.0)
    b = cache.allocate()          # a second slot: the store doubles, slot a's entries stay
    filled(cache, b, 2, 2.0)
    layer = cache.layers[0]
    assert (a, b) == (0, 1) and cache.lengths == [3, 2]
    assert torch.equal(layer.keys[a, :, :3], torch.ones(2, 3, 4))
    # a tree of 4 entries after slot a's 3; keep entries 0 and 2 of it
    cache.prepare([a], 4)
    cache.update(torch.arange(4.0).view(1, 1, 4, 1).expand(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), 0)
    cache.keep(a, [0, 2])
    assert cache.lengths[a] == 5
    assert layer.keys[a, 0, 3:5, 0].tolist() == [0.0, 2.0]
    assert torch.equal(layer.keys[b, :, :2], torch.full((2, 2, 4), 2.0)), "the other slot is untouched"


def test_a_released_slot_is_reused_and_a_gathered_batch_reads_the_right_slots():
    cache = SlotCache(num_layers=1)
    slots = [cache.allocate() for _ in range(3)]
    for slot in slots:
        filled(cache, slot, 2, float(slot + 1))
    cache.release(1)
    assert cache.allocate() == 1 and cache.lengths[1] == 0
    filled(cache, 1, 2, 9.0)
    cache.prepare([2, 0], 1)      # not consecutive: gathered
    keys, _ = cache.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4), 0)
    assert keys.shape == (2, 2, 3, 4)
    assert keys[0, 0, :2, 0].tolist() == [3.0, 3.0] and keys[1, 0, :2, 0].tolist() == [1.0, 1.0]


def test_max_slots_bounds_the_store():
    cache = SlotCache(num_layers=1, max_slots=2)
    cache.allocate(), cache.allocate()
    with pytest.raises(RuntimeError, match="slots are in use"):
        cache.allocate()


def sessions(target, cache=None):
    """A verifier per prompt (sharing `cache` when given), each with a drafted tree of its own size."""
    drafter_head = DraftHead.random(target.model, seed=2)
    out = []
    for i, prompt in enumerate(PROMPTS):
        verifier = TargetVerifier(target, cache)
        features, _ = verifier.prefill(prompt[:-1])
        drafter = Drafter("r", drafter_head, target)
        drafter.extend(prompt[1:], features)
        tree = drafter.propose(TreeSettings(total_tokens=4 + 3 * i, depth=3, top_k=3))
        out.append((verifier, prompt[-1], tree))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_a_batch_verifies_each_tree_as_alone(arch):
    target = tiny_target(arch, seed=3)
    alone = sessions(target)
    batched = sessions(target, SlotCache.for_model(target.config))
    results = verify_batch([v for v, _, _ in batched], [r for _, r, _ in batched], [t for _, _, t in batched])
    for prompt, (verifier, root, tree), (logits, features) in zip(PROMPTS, alone, results):
        expected_logits, expected_features = verifier.verify(root, tree)
        assert torch.allclose(logits, expected_logits, atol=1e-5)
        assert torch.allclose(features, expected_features, atol=1e-5)
        with torch.no_grad():   # and both are the model's own: the root's logits after the whole prompt
            assert torch.allclose(logits[0], target.model(torch.tensor([prompt])).logits[0, -1], atol=1e-4)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_batched_steps_accept_what_single_steps_accept(temperature):
    """Several steps in a row, sessions of different lengths and trees; greedy and seeded sampling."""
    target = tiny_target("llama", seed=7, logit_scale=4.0)
    params = SamplingParams(temperature=temperature)
    runs = []
    for cache in (None, SlotCache.for_model(target.config)):
        state = sessions(target, cache)
        generators = [torch.Generator().manual_seed(i) for i in range(len(state))]
        roots = [root for _, root, _ in state]
        trail = []
        for _ in range(3):
            verifiers, trees = [v for v, _, _ in state], [t for _, _, t in state]
            if cache is None:
                steps = [v.step(r, t, params, g) for v, r, t, g in zip(verifiers, roots, trees, generators)]
            else:
                steps = step_batch(verifiers, roots, trees, [params] * len(state), generators)
            trail.append([(path, bonus) for path, bonus, _ in steps])
            roots = [bonus for _, bonus, _ in steps]
        runs.append((trail, [v.length for v, _, _ in state]))
    assert runs[0] == runs[1]
