"""A drafter failing mid-request is dropped: the request completes, losslessly, with the remaining drafters."""

import threading

import pytest
import torch

from taps_engine import Decoder, PlainDecoder, TreeSettings
from taps_engine.drafter import Drafter, DrafterUnavailable, Recoverable
from tiny import oracle_head, tiny_target


class FailingAfter:
    """A real drafter that becomes unavailable after `n` proposals (like a deleted remote application)."""

    def __init__(self, drafter: Drafter, n: int, fail_agreement: bool = False) -> None:
        self.inner, self.n, self.fail_agreement = drafter, n, fail_agreement
        self.name = drafter.name

    def reset(self):
        self.inner.reset()

    def extend(self, tokens, features):
        self.inner.extend(tokens, features)

    def prompt_agreement(self):
        if self.fail_agreement:
            raise DrafterUnavailable(self.inner.name, "replica gone")
        return self.inner.prompt_agreement()

    def propose(self, settings):
        if self.n == 0:
            raise DrafterUnavailable(self.inner.name, "replica gone")
        self.n -= 1
        return self.inner.propose(settings)


@pytest.fixture(scope="module")
def target():
    return tiny_target("llama", layers=1, seed=11, logit_scale=6.0, embed_scale=60.0)


class Remote(FailingAfter):
    """Marked like a remote proposer: multi-drafter policies call these from a thread pool."""

    concurrent = True
    threads: set = set()

    def propose(self, settings):
        Remote.threads.add(threading.get_ident())
        return super().propose(settings)


def drafters(target, fail, n=2, fail_agreement=False, remote=False):
    heads = {"a": oracle_head(target), "b": oracle_head(target, noise=0.3, seed=1)}
    if remote:
        return {name: Remote(Drafter(name, h, target), n if name in fail else 10 ** 6, fail_agreement)
                for name, h in heads.items()}
    return {name: FailingAfter(Drafter(name, h, target), n, fail_agreement) if name in fail
            else Drafter(name, h, target) for name, h in heads.items()}


@pytest.mark.parametrize("policy, fail, dropped, falls_back_to_plain", [
    ("confidence", {"a"}, ["a"], False), ("merged-trie", {"b"}, ["b"], False),
    ("merged-concat", {"a", "b"}, ["a", "b"], True), ("single", {"a"}, ["a"], True),
    ("sticky", {"a", "b"}, ["a"], True),   # only the chosen drafter drafts, so only it is found failing
])
@pytest.mark.parametrize("remote", [False, True])
def test_request_completes_without_the_failed_drafter(target, policy, fail, dropped, falls_back_to_plain, remote):
    prompt = [0, 5, 17, 33, 8]
    expected = PlainDecoder(target).generate(prompt, max_new_tokens=24, stop_on_eos=False).token_ids
    result = Decoder(target, drafters(target, fail, remote=remote), policy, TreeSettings(8, 3, 2)).generate(
        prompt, max_new_tokens=24, stop_on_eos=False)
    assert result.token_ids == expected
    assert sorted(result.decision.unavailable) == dropped
    late = result.steps[3:]
    assert all(not set(s.drafters) & fail for s in late)
    assert all(s.tree_size == 0 for s in late) == falls_back_to_plain


def test_remote_proposers_draft_in_parallel_losslessly(target):
    Remote.threads.clear()
    prompt = [0, 5, 17, 33, 8]
    expected = PlainDecoder(target).generate(prompt, max_new_tokens=24, stop_on_eos=False).token_ids
    for policy in ("confidence", "merged-trie"):
        result = Decoder(target, drafters(target, set(), remote=True), policy, TreeSettings(8, 3, 2)).generate(
            prompt, max_new_tokens=24, stop_on_eos=False)
        assert result.token_ids == expected
    assert threading.get_ident() not in Remote.threads and len(Remote.threads) >= 2


def test_sticky_exploration_skips_a_failed_drafter(target):
    result = Decoder(target, drafters(target, {"a"}, fail_agreement=True), "sticky", TreeSettings(8, 3, 2)).generate(
        [0, 5, 17, 33, 8], max_new_tokens=16, stop_on_eos=False)
    assert result.decision.drafter == "b" and result.decision.unavailable == ("a",)
    assert result.token_ids == PlainDecoder(target).generate([0, 5, 17, 33, 8], max_new_tokens=16,
                                                             stop_on_eos=False).token_ids


@pytest.mark.parametrize("policy, fail", [("confidence", "a"), ("entropy", "a"), ("merged-trie", "a"),
                                          ("merged-concat", "b")])
def test_nodes_keep_their_drafters_name_after_a_drop(target, policy, fail):
    """Tree nodes name the drafter that drafted them before and after another drafter is dropped (a node's
    index is fixed for the request, not taken from the drafters still active)."""
    result = Decoder(target, drafters(target, {fail}, n=2), policy, TreeSettings(8, 3, 2)).generate(
        [0, 5, 17, 33, 8], max_new_tokens=24, stop_on_eos=False)
    assert result.decision.unavailable == (fail,)
    survivor = ({"a", "b"} - {fail}).pop()
    after = [s for s in result.steps if s.drafters == [survivor] and fail not in s.drafters][-3:]
    assert after, "steps after the drop"
    for s in result.steps:
        assert set(s.node_drafter) <= set(s.drafters), (s.drafters, s.node_drafter)
    for s in after:
        assert set(s.node_drafter) == {survivor}


class Rejoining(FailingAfter):
    """A remote-like drafter that fails after `n` proposals, stays down for `down` checks, then answers again and
    rejoins from the committed tokens alone (recomputing their features, as a remote proposer has the verifier do)."""

    def __init__(self, drafter: Drafter, n: int, down: int, target, first_token: int) -> None:
        super().__init__(drafter, n)
        self.down, self.target, self.first_token = down, target, first_token
        self.rejoined = 0

    def recovered(self):
        self.down -= 1
        return self.down < 0

    def rejoin(self, tokens):
        ids = torch.tensor([[self.first_token, *tokens[:-1]]])
        with torch.no_grad():
            features = self.target.model.get_decoder()(input_ids=ids).last_hidden_state[0]
        self.inner.reset()
        self.inner.extend(tokens, features)
        self.n, self.rejoined = 10 ** 6, self.rejoined + 1


@pytest.mark.parametrize("policy", ["single", "confidence", "merged-trie"])
def test_a_recovered_drafter_is_taken_back_mid_request(target, policy):
    prompt = [0, 5, 17, 33, 8]
    expected = PlainDecoder(target).generate(prompt, max_new_tokens=32, stop_on_eos=False).token_ids
    heads = drafters(target, set())
    flaky = Rejoining(heads["a"], n=2, down=3, target=target, first_token=prompt[0])
    assert isinstance(flaky, Recoverable)
    pool = {"a": flaky} if policy == "single" else {"a": flaky, "b": heads["b"]}
    result = Decoder(target, pool, policy, TreeSettings(8, 3, 2)).generate(prompt, max_new_tokens=32,
                                                                          stop_on_eos=False, drafter=None)
    assert result.token_ids == expected
    assert flaky.rejoined == 1 and result.decision.unavailable == ("a",)
    assert 10 ** 6 - flaky.n >= 3, "it drafts again after rejoining"
    if policy == "single":
        used = ["a" in s.drafters for s in result.steps]
        assert used[:2] == [True, True] and not any(used[2:5]) and all(used[6:]), used
        assert sum(s.accepted for s in result.steps[6:]) > 0, "the rejoined head drafts from the right history"
