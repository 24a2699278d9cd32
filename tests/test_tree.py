"""Tree construction, masks, merges, and tree verification against sequential decoding."""

import pytest
import torch

from taps_engine import DraftHead, Drafter, DraftTree, TreeSettings
from taps_engine import tree as trees
from taps_engine.acceptance import accept_greedy
from taps_engine.verifier import TargetVerifier
from tiny import oracle_head, tiny_target


def make_tree(tokens, parents, scores, source=0):
    depths = []
    for p in parents:
        depths.append(1 if p < 0 else depths[p] + 1)
    n = len(tokens)
    return DraftTree(torch.tensor(tokens), torch.tensor(parents), torch.tensor(depths),
                     torch.tensor(scores, dtype=torch.float), torch.zeros(n), torch.full((n,), source))


def path_to(tree, i):
    path = []
    while i >= 0:
        path.append(int(tree.tokens[i]))
        i = int(tree.parents[i])
    return path[::-1]


def assert_well_formed(tree: DraftTree):
    for i in range(len(tree)):
        p = int(tree.parents[i])
        assert p < i, "parents precede children"
        assert int(tree.depths[i]) == (1 if p < 0 else int(tree.depths[p]) + 1)
        if p >= 0:
            assert tree.scores[i] <= tree.scores[p] + 1e-6


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_tree_logits_equal_sequential_logits(arch):
    target = tiny_target(arch, seed=3)
    model = target.model
    prompt = [0, 4, 9, 13, 2, 7]
    tree = make_tree([5, 6, 7, 8, 5, 9], [-1, -1, 0, 0, 2, 1], [-1, -2, -2, -3, -4, -5])
    verifier = TargetVerifier(target)
    verifier.prefill(prompt[:-1])
    logits, features = verifier.verify(prompt[-1], tree)
    with torch.no_grad():
        root = model(torch.tensor([prompt])).logits[0, -1]
        assert torch.allclose(logits[0], root, atol=1e-4)
        for i in range(len(tree)):
            seq = torch.tensor([prompt + path_to(tree, i)])
            expected = model(seq).logits[0, -1]
            assert torch.allclose(logits[i + 1], expected, atol=1e-4), f"node {i}"


def test_commit_compacts_cache_to_accepted_path():
    target = tiny_target("llama", seed=4)
    prompt = [0, 3, 5, 8]
    tree = make_tree([11, 12, 13, 14], [-1, -1, 1, 2], [-1, -1.5, -2, -3])
    verifier = TargetVerifier(target)
    verifier.prefill(prompt[:-1])
    verifier.verify(prompt[-1], tree)
    verifier.commit([0, 2, 3])  # root, node 1 (12), node 2 (13)
    assert verifier.length == len(prompt) - 1 + 3
    logits, _ = verifier.verify(14, DraftTree.empty())
    with torch.no_grad():
        expected = target.model(torch.tensor([prompt + [12, 13, 14]])).logits[0, -1]
    assert torch.allclose(logits[0], expected, atol=1e-4)


@pytest.mark.parametrize("settings", [TreeSettings(60, 5, 10), TreeSettings(16, 4, 4), TreeSettings(8, 6, 2),
                                      TreeSettings(5, 1, 10), TreeSettings(30, 3, 1)])
def test_drafted_tree_respects_budget_and_is_connected(settings):
    target = tiny_target("qwen3", seed=5)
    drafter = Drafter("r", DraftHead.random(target.model, seed=2), target)
    verifier = TargetVerifier(target)
    features, _ = verifier.prefill([0, 6, 7, 8])
    drafter.extend([6, 7, 8, 9], features)
    tree = drafter.propose(settings)
    assert 0 < len(tree) <= settings.total_tokens - 1
    assert tree.max_depth <= settings.depth + 1   # EAGLE-2's convention: depth expansions after the root's top-k
    assert_well_formed(tree)
    kids = tree.children()
    assert all(len(k) <= settings.top_k for k in kids)
    assert all(len(set(int(tree.tokens[c]) for c in k)) == len(k) for k in kids), "siblings are distinct"
    # drafting leaves the head's cache at the committed pairs only
    assert drafter.cached_pairs == drafter.processed == 4


def test_deepest_draft_sits_at_depth_plus_one():
    target = tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)
    drafter = Drafter("o", oracle_head(target), target)
    features, _ = TargetVerifier(target).prefill([0, 6, 7, 8])
    drafter.extend([6, 7, 8, 9], features)
    for depth in (1, 3, 5):
        # a chain (top_k 1) keeps every level: the root's child, then `depth` expansions
        tree = drafter.propose(TreeSettings(total_tokens=20, depth=depth, top_k=1))
        assert len(tree) == depth + 1 and tree.max_depth == depth + 1


def test_concat_accepts_as_much_as_trie():
    """Two drafters propose the same first token with different continuations; the target wants the second
    drafter's. Concat holds both copies of the first token: acceptance must continue below either."""
    a = make_tree([5, 6], [-1, 0], [-0.1, -0.2], source=0)
    b = make_tree([5, 7, 8], [-1, 0, 1], [-0.3, -0.4, -0.5], source=1)
    merged = {name: merge([a, b]) for name, merge in (("concat", trees.concat), ("trie", trees.trie))}
    wanted = [5, 7, 8, 4]   # the target's argmax after the root, 5, 7 and 8

    def logits_for(tree):
        rows = torch.full((len(tree) + 1, 10), -5.0)
        for row in range(len(tree) + 1):
            depth = 0 if row == 0 else int(tree.depths[row - 1])
            rows[row, wanted[depth]] = 5.0
        return rows

    for name, tree in merged.items():
        path, bonus = accept_greedy(logits_for(tree), tree)
        assert tree.tokens[path].tolist() == [5, 7, 8] and bonus == 4, name


def test_ancestor_mask_matches_parents():
    tree = make_tree([1, 2, 3, 4], [-1, 0, -1, 1], [-1, -2, -1.5, -3])
    mask = tree.ancestor_mask()
    expected = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 0], [1, 1, 1, 0, 1]],
                            dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_merges():
    a = make_tree([5, 6, 7, 8], [-1, -1, 0, 2], [-0.1, -1.0, -0.5, -0.9], source=0)
    b = make_tree([5, 9, 7, 3], [-1, -1, 0, 0], [-0.3, -0.7, -0.4, -2.0], source=1)
    concat = trees.concat([a, b])
    assert len(concat) == 8
    assert_well_formed(concat)
    assert [path_to(concat, i) for i in range(8)][4:] == [[5], [9], [5, 7], [5, 3]]

    trie = trees.trie([a, b])
    paths = [tuple(path_to(trie, i)) for i in range(len(trie))]
    assert len(paths) == len(set(paths)) == 6  # [5] and [5,7] were shared
    assert set(paths) == {(5,), (6,), (5, 7), (5, 7, 8), (9,), (5, 3)}
    assert_well_formed(trie)
    shared = paths.index((5, 7))
    assert trie.scores[shared] == pytest.approx(-0.4) and int(trie.sources[shared]) == 1  # best copy wins

    for cap in (1, 3, 5):
        budget = trees.budget([a, b], cap)
        assert len(budget) == cap
        assert_well_formed(budget)
        kept = sorted(budget.scores.tolist(), reverse=True)
        assert kept == sorted(trie.scores.tolist(), reverse=True)[:cap]


def test_top_keeps_parents_on_ties():
    tree = make_tree([1, 2, 3, 4], [-1, 0, 1, -1], [0.0, 0.0, 0.0, -1.0])
    top = tree.top(2)
    assert [path_to(top, i) for i in range(2)] == [[1], [1, 2]]
