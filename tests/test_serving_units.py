"""Serving without Ray: session LRU, the drafter/verifier servers' state protocols, the remote proposer and
verifier, the router core (against the in-process engine, token for token), validation, text deltas, the
affinity request router, and the Serve config / KubeRay manifest generators."""

import math
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import torch
import yaml
from grpc_health.v1 import health_pb2
from ray.serve.schema import ServeDeploySchema

from serving_helpers import PROMPT, TREE, InProcessHandle, bad_requests
from services.affinity import SessionAffinityRouter
from services.app import app_specs, check_fits, required_resources, serve_config_dict
from services.assignments import LocalAssignmentCache
from services.breaker import Breaker
from services.config import ServeConfig, load_serve_config
from services.drafter_server import DrafterServer
from services.generation import RouterCore
from services.codec import from_proto, settings_to_proto, to_proto, tree_from_proto
from services.embedding_target import load_embedding_target
from services.prometheus import RouterMetrics
from services.protos_gen.taps.v1 import taps_pb2 as pb
from services.remote import VERIFIER, RemoteProposer, RemoteVerifier, VerifierUnavailable
from services.results import TextDeltas
from services.sessions import SessionCache
from services.validation import RequestError, parse_request
from services.verifier_server import VerifierServer
from taps_engine import Decoder
from taps_engine.acceptance import SamplingParams
from taps_engine.drafter import Drafter, DrafterUnavailable
from taps_engine.economics import StepEconomics
from taps_engine.head import load_head
from taps_engine.policies import PROBE_MARGIN
from taps_engine.target import load_prompt_format, load_target
from taps_engine.tree import TreeSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = TreeSettings(**TREE)


@pytest.fixture(scope="module")
def engine(models):
    """The in-process reference: the same target and heads, loaded as the servers load them."""
    target = load_target(models["target"], dtype="fp32")
    return target, {name: load_head(path, target.model) for name, path in models["heads"].items()}


@pytest.fixture(scope="module")
def servers(models):
    drafters = {name: DrafterServer(name, path, models["target"], "fp32") for name, path in models["heads"].items()}
    return drafters, VerifierServer(models["target"], "fp32")


def make_config(models, fallback: bool = False, **router) -> ServeConfig:
    """The serving config of these tests; without the fallback (by default) every step drafts, as the engine
    references below do, so step counts and τ compare exactly (the fallback's verdicts depend on timing)."""
    return ServeConfig.model_validate({
        "target": models["target"], "dtype": "fp32", "tree": TREE, "fallback": fallback,
        "drafters": {name: {"path": path} for name, path in models["heads"].items()},
        "router": {"default_max_new_tokens": 24, "max_new_tokens_cap": 64, "max_prompt_tokens": 200, **router}})


def in_process_core(models, drafters: dict, verifier, config: ServeConfig | None = None) -> RouterCore:
    """A router core that calls these drafter and verifier servers in process."""
    return RouterCore(config or make_config(models), load_prompt_format(models["target"]),
                      {name: InProcessHandle(server) for name, server in drafters.items()},
                      InProcessHandle(verifier), LocalAssignmentCache(60.0), RouterMetrics())


@pytest.fixture
def core(models, servers):
    return in_process_core(models, *servers)


def idle_breaker() -> Breaker:
    """A breaker whose probes never succeed: what is marked down stays down."""
    def probe(name: str) -> None:
        raise RuntimeError(f"{name} still down")
    return Breaker(probe, cooldown_s=0.0, probe_interval_s=0.05)


def run(core, **fields):
    chunks = list(core.chunks(pb.GenerateRequest(**fields)))
    return [t for c in chunks for t in c.token_ids], "".join(c.text for c in chunks), chunks[-1]


# ----- partial targets -----

def test_the_router_needs_only_the_prompt_format(models, engine):
    target, _ = engine
    view = load_prompt_format(models["target"])
    assert (view.eos_token_ids, view.vocab_size, view.hidden_size, view.context_length) == \
        (target.format.eos_token_ids, target.format.vocab_size, target.format.hidden_size, target.format.context_length)
    assert view.encode([{"role": "user", "content": PROMPT}]) == target.format.encode(
        [{"role": "user", "content": PROMPT}])


def test_a_drafter_needs_only_the_targets_embedding_and_lm_head(models, engine):
    target, heads = engine
    partial = load_embedding_target(models["target"], dtype="fp32")
    assert partial.model.model.layers[0].mlp.up_proj.weight.is_meta
    assert torch.equal(partial.model.lm_head.weight, target.model.lm_head.weight)
    head = load_head(models["heads"]["a"], partial.model)
    full, light = Drafter("a", heads["a"], target), Drafter("a", head, partial)
    tokens, feats = list(range(100, 110)), torch.randn(10, 64, generator=torch.Generator().manual_seed(1))
    for d in (full, light):
        d.extend(tokens, feats)
    expected, got = full.propose(SETTINGS), light.propose(SETTINGS)
    assert torch.equal(expected.tokens, got.tokens) and torch.allclose(expected.scores, got.scores)


# ----- sessions -----

def test_session_cache_evicts_least_recently_used():
    cache = SessionCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1          # a is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert cache.evictions == 1 and len(cache) == 2
    assert cache.pop("a") == 1 and cache.pop("a") is None
    with pytest.raises(ValueError):
        SessionCache(0)


# ----- drafter server: the offset protocol -----

def _update(session, tokens, features, offset, drafter="a"):
    return pb.PairUpdate(session_id=session, drafter=drafter, offset=offset, tokens=tokens,
                         features=to_proto(features) if tokens else None)


def test_drafter_server_offset_protocol(servers):
    server = servers[0]["a"]
    h = server.target.config.hidden_size
    feats = torch.randn(5, h)
    settings = settings_to_proto(SETTINGS)
    propose = lambda u: server.Propose(pb.ProposeRequest(update=u, tree=settings))

    assert propose(_update("s", [3, 4, 5], feats[:3], 2)).miss.resend_from == 0      # unknown session
    assert propose(_update("s", [3, 4, 5], feats[:3], 0)).HasField("tree")           # offset 0 starts it
    assert propose(_update("s", [9], feats[:1], 5)).miss.resend_from == 3            # ahead: resend from 3
    assert propose(_update("s", [6, 7], feats[3:], 3)).HasField("tree")              # exactly in step
    assert propose(_update("s", [6], feats[3:4], 3)).miss.resend_from == 0           # behind (a retry): restart
    assert "s" not in server.sessions
    with pytest.raises(ValueError, match="serves drafter 'a'"):
        propose(_update("s", [3], feats[:1], 0, drafter="b"))
    with pytest.raises(ValueError, match="features of shape"):
        propose(_update("s", [3, 4], feats[:1], 0))
    assert server.Release(pb.ReleaseRequest(session_id="s")).released is False


def test_remote_proposer_survives_a_replica_restart(models, engine, servers):
    """The replica loses the session mid-request: the proposer resends the whole history and drafts as the
    in-process drafter does."""
    target, heads = engine
    h = target.config.hidden_size
    local = Drafter("a", heads["a"], target)
    handle = InProcessHandle(servers[0]["a"])
    g = torch.Generator().manual_seed(0)
    history = torch.randn(11, h, generator=g)
    refetched = []

    def refetch(start: int, end: int) -> torch.Tensor:   # what the verifier recomputes from the tokens
        refetched.append((start, end))
        return history[start:end]

    remote = RemoteProposer("a", handle, "restart", timeout_s=5, refetch=refetch, breaker=idle_breaker())
    done = 0
    for n in (6, 2, 3):
        tokens, feats = torch.randint(0, 1000, (n,), generator=g).tolist(), history[done:done + n]
        done += n
        for d in (local, remote):
            d.extend(tokens, feats)
        if n == 2:  # the replica restarts: a fresh server, no sessions
            handle.server = DrafterServer("a", models["heads"]["a"], models["target"], "fp32")
        expected, got = local.propose(SETTINGS), remote.propose(SETTINGS)
        assert torch.equal(expected.tokens, got.tokens) and torch.equal(expected.parents, got.parents)
        assert torch.allclose(expected.scores, got.scores, atol=1e-5)
        assert remote.pending == []   # acknowledged feature rows are not kept
    assert remote.resends == 1 and remote.acked == 11 and refetched == [(0, 6)]
    servers[0]["a"].Release(pb.ReleaseRequest(session_id="restart"))


def test_remote_failures_map_to_the_engine_contract(servers):
    proposer = RemoteProposer("a", InProcessHandle(servers[0]["a"], fail=True), "f", timeout_s=1,
                              refetch=lambda start, end: torch.zeros(end - start, 64), breaker=idle_breaker())
    proposer.extend([1, 2], torch.zeros(2, 64))
    with pytest.raises(DrafterUnavailable, match="'a' unavailable"):
        proposer.propose(SETTINGS)
    assert proposer.failed
    verifier = RemoteVerifier(InProcessHandle(servers[1], fail=True), "f", timeout_s=0.2, breaker=idle_breaker())
    with pytest.raises(VerifierUnavailable, match="Prefill failed"):
        verifier.prefill([1, 2, 3])


def test_breaker_marks_down_for_all_and_probes_back_after_the_cooldown():
    answers = {"x": False}
    probed = []

    def probe(name: str) -> None:
        probed.append(name)
        if not answers[name]:
            raise RuntimeError("down")

    breaker = Breaker(probe, cooldown_s=0.3, probe_interval_s=0.02)
    breaker.failed("x", "timeout")
    breaker.failed("x", "timeout again")  # no second cool-down
    assert not breaker.up("x") and breaker.down() == ["x"]
    time.sleep(0.15)
    assert probed == [], "no probe inside the cool-down"
    assert not breaker.wait_up("x", 0.3)
    assert probed, "probed after the cool-down"
    answers["x"] = True
    assert breaker.wait_up("x", 2.0) and breaker.up("x") and breaker.down() == []


def test_a_drafter_marked_down_fails_at_once_and_rejoins_with_its_whole_history(models, engine, servers):
    """Down: the next call raises without reaching the replica. Up again: the proposer resends the history (its
    features recomputed) and drafts exactly as an in-process drafter fed the same pairs."""
    target, heads = engine
    history = torch.randn(9, target.config.hidden_size, generator=torch.Generator().manual_seed(1))
    tokens = torch.randint(0, 1000, (9,), generator=torch.Generator().manual_seed(2)).tolist()
    handle = InProcessHandle(servers[0]["a"])
    answers = {"up": False}

    def probe(name: str) -> None:
        if not answers["up"]:
            raise RuntimeError("down")

    breaker = Breaker(probe, cooldown_s=0.0, probe_interval_s=0.02)
    remote = RemoteProposer("a", handle, "rejoin", timeout_s=5, refetch=lambda a, b: history[a:b], breaker=breaker)
    remote.extend(tokens[:5], history[:5])
    handle.fail = True
    with pytest.raises(DrafterUnavailable, match="replica gone"):
        remote.propose(SETTINGS)
    assert not breaker.up("drafter a") and not remote.recovered()
    handle.fail = False
    calls = len(handle.calls)
    start = time.perf_counter()
    with pytest.raises(DrafterUnavailable, match="marked unavailable"):
        remote.propose(SETTINGS)
    assert len(handle.calls) == calls and time.perf_counter() - start < 0.05, "skipped without a call"
    answers["up"] = True
    assert breaker.wait_up("drafter a", 2.0) and remote.recovered()
    remote.rejoin(tokens)
    local = Drafter("a", heads["a"], target)
    local.extend(tokens, history)
    expected, got = local.propose(SETTINGS), remote.propose(SETTINGS)
    assert torch.equal(expected.tokens, got.tokens) and torch.equal(expected.parents, got.parents)
    assert not remote.failed and remote.acked == 9
    servers[0]["a"].Release(pb.ReleaseRequest(session_id="rejoin"))


def test_new_requests_get_unavailable_at_once_while_the_verifier_is_down(core):
    core.breaker.failed("verifier", "test")
    start = time.perf_counter()
    with pytest.raises(RequestError) as error:
        run(core, prompt=PROMPT, policy="single", drafter="a")
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and "verifier" in error.value.message
    assert time.perf_counter() - start < 0.5
    assert core.health() == health_pb2.HealthCheckResponse.NOT_SERVING
    assert core.breaker.wait_up("verifier", 5.0), "the probe finds the verifier answering"
    assert run(core, prompt=PROMPT, policy="single", drafter="a")[2].finish_reason


# ----- verifier server: rebuilding state -----

def test_verifier_rebuilds_a_missing_or_partial_cache(models, servers):
    """A replica without the session (restart) or holding only a prefix (re-routed) asks for what it lacks and,
    given it, verifies exactly like the one that kept the session."""
    kept = servers[1]
    prompt = kept.target.format.encode([{"role": "user", "content": PROMPT}])
    logits = kept.Prefill(pb.PrefillRequest(session_id="k", prompt_ids=prompt)).logits
    committed, held = prompt + [int(from_proto(logits).argmax())], len(prompt)
    drafter = DrafterServer("a", models["heads"]["a"], models["target"], "fp32")
    greedy = pb.Acceptance(sampling=pb.SamplingParams(temperature=0.0, top_p=1.0))
    partial = VerifierServer(models["target"], "fp32")
    partial.Prefill(pb.PrefillRequest(session_id="k", prompt_ids=prompt))
    fresh = VerifierServer(models["target"], "fp32")
    feats = torch.zeros(len(prompt), kept.target.config.hidden_size)
    update = pb.PairUpdate(session_id="k", drafter="a", offset=0, tokens=committed[1:], features=to_proto(feats))
    tree = drafter.Propose(pb.ProposeRequest(update=update, tree=settings_to_proto(SETTINGS))).tree

    def verify(server, offset):
        return server.Verify(pb.VerifyRequest(session_id="k", offset=offset, tokens=committed[offset:], tree=tree,
                                              accept=greedy))

    for step in range(3):
        answers = [verify(kept, held).verified]
        if step == 2:  # `partial` held the prompt only; `fresh` never saw the session
            assert verify(partial, held).miss.resend_from == len(prompt)
            assert verify(fresh, held).miss.resend_from == 0
            answers += [verify(partial, len(prompt)).verified, verify(fresh, 0).verified]
            assert [a.caught_up for a in answers] == [False, True, True]
        for other in answers[1:]:
            assert other.path == answers[0].path and other.bonus_token == answers[0].bonus_token
            assert torch.allclose(from_proto(other.features), from_proto(answers[0].features), atol=1e-4)
        accepted = tree_from_proto(tree).tokens[list(answers[0].path)].tolist()
        held = len(committed) + len(accepted)
        committed = committed + accepted + [answers[0].bonus_token]
    assert verify(kept, held - 1).miss.resend_from == 0 and "k" not in kept.sessions  # a retry: start over
    features = kept.Features(pb.FeaturesRequest(token_ids=committed, start=3)).features
    full, _ = kept._prefilled(committed)[1:]
    assert torch.allclose(from_proto(features), full[3:], atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        kept.Features(pb.FeaturesRequest(token_ids=committed, start=len(committed)))


def test_router_traffic_grows_linearly_with_the_answer(models, servers):
    """Bytes sent to the verifier and drafters per request: twice the tokens, about twice the bytes (the old
    protocol resent the whole context every step: quadratic)."""
    sent = {}

    class Counting(InProcessHandle):
        def remote(self, data: bytes):
            sent[self.method] = sent.get(self.method, 0) + len(data)
            return super().remote(data)

        def options(self, method_name=None, **_):
            view = Counting(self.server, method_name or self.method, self.fail)
            view.calls = self.calls
            return view

    core = RouterCore(make_config(models, max_new_tokens_cap=512), load_prompt_format(models["target"]),
                      {name: Counting(s) for name, s in servers[0].items()}, Counting(servers[1]),
                      LocalAssignmentCache(60.0), RouterMetrics())
    totals = []
    for n in (64, 128, 256):
        sent.clear()
        tokens, _, _ = run(core, prompt=PROMPT, policy="single", drafter="b", max_new_tokens=n, ignore_eos=True)
        assert len(tokens) == n
        totals.append(sent["Verify"] + sent["Propose"])
    assert totals[2] / totals[1] < 2.2 and totals[1] / totals[0] < 2.2
    assert totals[2] - totals[1] < 2.4 * (totals[1] - totals[0])   # constant bytes per token, not growing


# ----- the router core against the in-process engine -----

@pytest.mark.parametrize("policy", ["single", "confidence", "merged-trie", "sticky", "probe"])
def test_router_core_matches_the_engine(core, engine, servers, policy):
    target, heads = engine
    expected = Decoder(target, heads, policy, SETTINGS).generate([{"role": "user", "content": PROMPT}],
                                                                 max_new_tokens=24)
    tokens, text, final = run(core, prompt=PROMPT, policy=policy, conversation_id=f"matches-{policy}")  # unassigned
    assert tokens == expected.token_ids and text == expected.text
    assert final.stats.mean_acceptance_length == pytest.approx(expected.tau)
    assert final.stats.n_steps == len(expected.steps) and final.policy == expected.policy
    assert 0 < final.stats.draft_seconds and 0 < final.stats.verify_seconds
    assert final.stats.draft_seconds + final.stats.verify_seconds <= final.stats.seconds
    assert final.finish_reason in (pb.FINISH_REASON_EOS, pb.FINISH_REASON_LENGTH)
    assert len(servers[1].sessions) == 0 and all(len(d.sessions) == 0 for d in servers[0].values())


def test_the_router_falls_back_to_plain_steps_and_keeps_the_output(models, servers, engine):
    """With the fallback on (the serving default), the first full window of speculative steps is followed by plain
    steps that measure what a plain step costs: they verify no draft, and the output stays the engine's."""
    core = in_process_core(models, *servers, make_config(models, fallback=True))
    target, heads = engine
    expected = Decoder(target, heads, "probe", SETTINGS).generate([{"role": "user", "content": PROMPT}],
                                                                  max_new_tokens=48, stop_on_eos=False)
    chunks = list(core.chunks(pb.GenerateRequest(prompt=PROMPT, policy="probe", max_new_tokens=48, ignore_eos=True,
                                                 conversation_id="fallback")))
    assert [t for c in chunks for t in c.token_ids] == expected.token_ids
    window = StepEconomics().window
    sizes = [c.step.tree_size for c in chunks if c.HasField("step")]
    assert all(sizes[:window]) and sizes[window:window + 2] == [0, 0]


@pytest.mark.parametrize("colocate", [False, True])
def test_the_router_serves_cost_aware_trees_with_the_verifiers_cost_curve(models, engine, tmp_path, monkeypatch,
                                                                          colocate):
    """A cost-aware tree prunes each step by the verifier replica's cost curve (asked for once per router) and a
    calibration the policy's requests share; greedy output stays plain decoding's. Co-located drafters keep their
    one round trip per step although the drafting-stop hint moves every step."""
    monkeypatch.setenv("TAPS_HOME", str(tmp_path))   # the replica caches its measured curve here
    target, _ = engine
    verifier = VerifierServer(models["target"], "fp32", drafters=models["heads"] if colocate else None)
    config = make_config(models)
    config.tree = TreeSettings(**TREE, cost_aware=True)
    for drafter in config.drafters.values():
        drafter.colocated = colocate
    drafters = {name: DrafterServer(name, path, models["target"], "fp32") for name, path in models["heads"].items()}
    handle = InProcessHandle(verifier)
    core = RouterCore(config, load_prompt_format(models["target"]),
                      {name: handle if colocate else InProcessHandle(drafters[name]) for name in config.drafters},
                      handle, LocalAssignmentCache(60.0), RouterMetrics())
    plain = Decoder(target, {}, "plain")
    for prompt in (PROMPT, "Name three colors."):
        expected = plain.generate([{"role": "user", "content": prompt}], max_new_tokens=32, stop_on_eos=False)
        handle.calls.clear()
        chunks = list(core.chunks(pb.GenerateRequest(prompt=prompt, policy="single", drafter="a", max_new_tokens=32,
                                                     ignore_eos=True)))
        assert [t for c in chunks for t in c.token_ids] == expected.token_ids
        steps = [c.step for c in chunks if c.HasField("step")]
        assert all(1 <= s.tree_size <= SETTINGS.max_nodes for s in steps)
        assert handle.calls.count("Info") == (prompt == PROMPT), "the cost curve is asked for once"
        if colocate:
            assert handle.calls.count("Verify") == len(steps) and handle.calls.count("Draft") == 1
    assert list((tmp_path / "costs").glob("*.json")) and set(verifier.verify_ms) == {1, 2, 4, 8, 16, 32, 64}
    assert core._cost_models["single"].calibration.total.sum() > 0, "the requests taught the policy's calibration"


def test_a_verifier_that_cannot_measure_its_costs_still_serves_fixed_trees(models, engine, servers, monkeypatch,
                                                                           caplog):
    """A failed cost measurement degrades the service to the configured tree unpruned: the verifier stays up,
    answers say why, requests keep plain decoding's output, and the router does not ask again at every request."""
    def fail(target):
        raise RuntimeError("out of memory")
    monkeypatch.setattr("services.verifier_server.verify_costs", fail)
    target, _ = engine
    drafters, _ = servers
    verifier = VerifierServer(models["target"], "fp32")
    config = make_config(models)
    config.tree = TreeSettings(**TREE, cost_aware=True)
    core = in_process_core(models, drafters, verifier, config)
    assert "out of memory" in verifier.Info(pb.InfoRequest(verify_costs=True)).verify_costs_error
    plain = Decoder(target, {}, "plain")
    for prompt in (PROMPT, "Name three colors."):
        expected = plain.generate([{"role": "user", "content": prompt}], max_new_tokens=24, stop_on_eos=False)
        chunks = list(core.chunks(pb.GenerateRequest(prompt=prompt, policy="single", drafter="a", max_new_tokens=24,
                                                     ignore_eos=True)))
        assert [t for c in chunks for t in c.token_ids] == expected.token_ids
        assert all(c.step.tree_size == SETTINGS.max_nodes for c in chunks if c.HasField("step")), "unpruned"
    assert core.verifier.calls.count("Info") == 1 and core.breaker.up(VERIFIER)
    assert "serving fixed trees" in caplog.text and verifier.verify_ms is None


def test_router_core_sampling_matches_the_engine_for_a_seed(core, engine):
    target, heads = engine
    expected = Decoder(target, heads, "merged", SETTINGS).generate(
        [{"role": "user", "content": PROMPT}], max_new_tokens=12, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    tokens, _, _ = run(core, prompt=PROMPT, policy="merged", max_new_tokens=12, temperature=0.9, top_p=0.95,
                       top_k=50, seed=7)
    assert tokens == expected.token_ids


@pytest.fixture(scope="module")
def colocated(models):
    """A router core whose drafters live in the verifier's replica, and that replica."""
    verifier = VerifierServer(models["target"], "fp32", drafters=models["heads"])
    config = make_config(models)
    for drafter in config.drafters.values():
        drafter.colocated = True
    handle = InProcessHandle(verifier)
    core = RouterCore(config, load_prompt_format(models["target"]), {name: handle for name in config.drafters},
                      handle, LocalAssignmentCache(60.0), RouterMetrics())
    return core, verifier, handle


@pytest.mark.parametrize("policy,temperature", [("single", 0.0), ("confidence", 0.0), ("merged-trie", 0.0),
                                                ("sticky", 0.0), ("probe", 0.0), ("merged", 0.9)])
def test_colocated_drafters_match_the_engine_in_one_round_trip_per_step(colocated, engine, policy, temperature):
    """Trees come back with each Verify: per request, Draft calls only for the first step (and sticky's scoring),
    whatever the number of steps (probe's choice included); tokens as in process."""
    core, verifier, handle = colocated
    target, heads = engine
    sampling = dict(max_new_tokens=24, temperature=temperature, seed=5)
    expected = Decoder(target, heads, policy, SETTINGS).generate([{"role": "user", "content": PROMPT}], **sampling)
    handle.calls.clear()
    tokens, text, final = run(core, prompt=PROMPT, policy=policy, conversation_id=f"colocated-{policy}", **sampling)
    assert tokens == expected.token_ids and text == expected.text
    assert final.stats.n_steps == len(expected.steps) > 4, "the drafters drafted what they draft in process"
    assert final.stats.mean_acceptance_length == pytest.approx(expected.tau)
    calls = {method: handle.calls.count(method) for method in set(handle.calls)}
    assert calls.pop("Verify") == final.stats.n_steps, "one round trip per step"
    assert calls.pop("Draft") == {"single": 1, "sticky": 3}.get(policy, 2)
    assert calls == {"Prefill": 1, "Release": 1}
    assert len(verifier.sessions) == 0 and all(c.lengths == [0] * c.slots for c in verifier.colocated.caches.values())


def test_colocated_drafters_rebuild_after_a_lost_session_and_a_failing_one_is_dropped(colocated, engine,
                                                                                     monkeypatch):
    """A replica that loses the session mid-request rebuilds the drafters from the history (output unchanged);
    a drafter whose drafting fails is dropped for the request, which completes with the target's own tokens."""
    core, verifier, handle = colocated
    target, heads = engine
    expected = Decoder(target, heads, "confidence", SETTINGS).generate([{"role": "user", "content": PROMPT}],
                                                                       max_new_tokens=24)
    verify = verifier.Verify

    def forgetful(request):
        if request.offset > 0 and len(verifier.sessions) and handle.calls.count("Verify") == 3:
            verifier.sessions.pop(request.session_id)   # a restart between two steps
        return verify(request)

    monkeypatch.setattr(verifier, "Verify", forgetful)
    handle.calls.clear()
    tokens, _, final = run(core, prompt=PROMPT, policy="confidence", max_new_tokens=24)
    assert tokens == expected.token_ids and final.stats.mean_acceptance_length == pytest.approx(expected.tau)
    assert handle.calls.count("Verify") == final.stats.n_steps + 1, "one step was resent to the rebuilt session"
    monkeypatch.undo()
    draft = verifier.colocated.draft

    def failing(asks):
        if any(name == "b" for _, _, name, _ in asks):
            raise RuntimeError("head b broke")
        return draft(asks)

    monkeypatch.setattr(verifier.colocated, "draft", failing)
    plain = Decoder(target, {"a": heads["a"]}, "single", SETTINGS).generate([{"role": "user", "content": PROMPT}],
                                                                            max_new_tokens=24)
    tokens, _, final = run(core, prompt=PROMPT, policy="confidence", max_new_tokens=24)
    assert tokens == plain.token_ids and list(final.decision.unavailable) == ["b"]
    assert len(verifier.sessions) == 0


def test_step_batcher_runs_waiting_jobs_together_and_hands_errors_to_their_callers():
    import threading

    from services.batching import StepBatcher

    seen = []

    def run(jobs):
        seen.append(list(jobs))
        if "bad" in jobs:
            raise ValueError("bad job")
        return [j * 2 for j in jobs]

    lone = StepBatcher(run, max_batch=8, wait_s=5.0, forward_lock=threading.Lock(), peers=lambda: 1)
    start = time.perf_counter()
    assert lone.submit(3) == 6 and time.perf_counter() - start < 1.0, "a lone caller does not wait for peers"
    group = StepBatcher(run, max_batch=3, wait_s=5.0, forward_lock=threading.Lock(), peers=lambda: 3)
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(group.submit, [1, 2, 4])) == [2, 4, 8]
    assert sorted(seen[-1]) == [1, 2, 4] and group.batches == 1 and group.steps == 3
    assert lone.busy_s > 0 and group.busy_s > 0
    with pytest.raises(ValueError, match="bad job"):
        lone.submit("bad")
    assert lone.submit(5) == 10, "the worker keeps serving after an error"


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_concurrent_requests_share_forwards_with_unchanged_output(models, temperature):
    """Four streams at once through a verifier and drafters that batch their sessions' steps: each stream gets
    what it gets alone."""
    drafters = {name: DrafterServer(name, path, models["target"], "fp32", max_batch_size=4, batch_wait_s=0.05)
                for name, path in models["heads"].items()}
    verifier = VerifierServer(models["target"], "fp32", max_batch_size=4, batch_wait_s=0.05)
    core = in_process_core(models, drafters, verifier)
    requests = [dict(prompt=f"{PROMPT} Case {i}.", policy=policy, max_new_tokens=20, temperature=temperature,
                     seed=i) for i, policy in enumerate(["single", "confidence", "merged-trie", "single"])]
    batchers = [verifier.batcher, drafters["a"].batcher]
    alone = [run(core, **request)[0] for request in requests]
    assert all(b.steps == b.batches for b in batchers), "one at a time: batches of one"
    before = [(b.batches, b.steps) for b in batchers]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda request: run(core, **request)[0], requests))
    assert together == alone
    for name, batcher, (forwards, steps) in zip(["verifier", "drafter a"], batchers, before):
        forwards, steps = batcher.batches - forwards, batcher.steps - steps
        assert steps > 1.5 * forwards, f"{name}: {steps} steps in {forwards} forwards: the streams were not batched"
    assert len(verifier.sessions) == 0 and verifier.kv.lengths == [0] * verifier.kv.slots
    info, drafter_info = verifier.Info(pb.InfoRequest()), drafters["a"].Info(pb.InfoRequest())
    assert (info.verify_forwards, info.verified_steps) == (verifier.batcher.batches, verifier.batcher.steps)
    assert (drafter_info.draft_forwards, drafter_info.drafted_steps) == (batchers[1].batches, batchers[1].steps)
    assert info.verify_seconds > 0 and drafter_info.draft_seconds > 0
    assert all(len(d.sessions) == 0 and d.kv.lengths == [0] * d.kv.slots for d in drafters.values())


def test_sticky_reuses_the_cached_assignment(core):
    _, _, first = run(core, prompt=PROMPT, policy="sticky", conversation_id="c1")
    assert not first.decision.from_assignment_cache and set(first.decision.scores) == {"a", "b"}
    assert first.decision.drafter == "a"   # the oracle head predicts the prompt best
    b_calls = len(core.drafters["b"].calls)
    _, _, second = run(core, prompt="Another question.", policy="sticky", conversation_id="c1")
    assert second.decision.from_assignment_cache and second.decision.drafter == "a"
    assert not second.decision.scores       # no exploration
    assert core.cache.stats.hits == 1 and len(core.drafters["b"].calls) == b_calls  # b never contacted
    _, _, forced = run(core, prompt=PROMPT, policy="sticky", drafter="b", conversation_id="c1")
    assert forced.decision.client_assigned and forced.decision.drafter == "b"


def test_probe_stores_its_choice_in_the_assignment_cache(core):
    _, _, first = run(core, prompt=PROMPT, policy="probe", conversation_id="p1")
    assert not first.decision.from_assignment_cache and first.decision.drafter == "a"
    assert first.decision.scores["a"] >= first.decision.scores["b"] + PROBE_MARGIN   # tokens matched while probing
    _, _, second = run(core, prompt="Another question.", policy="probe", conversation_id="p1")
    assert second.decision.from_assignment_cache and second.decision.drafter == "a" and not second.decision.scores


def test_a_stream_closed_early_releases_its_sessions(core, servers):
    chunks = core.chunks(pb.GenerateRequest(prompt=PROMPT, policy="merged", max_new_tokens=24))
    next(chunks), next(chunks)
    assert len(servers[1].sessions) == 1
    chunks.close()
    assert len(servers[1].sessions) == 0 and all(len(d.sessions) == 0 for d in servers[0].values())


def test_unavailable_verifier_is_a_request_error(models, servers):
    core = RouterCore(make_config(models), load_prompt_format(models["target"]),
                      {name: InProcessHandle(s) for name, s in servers[0].items()},
                      InProcessHandle(servers[1], fail=True), LocalAssignmentCache(60.0), RouterMetrics())
    with pytest.raises(RequestError) as error:
        run(core, prompt=PROMPT)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


def test_list_drafters(core):
    listing = core.list_drafters()
    assert [d.name for d in listing.drafters] == ["a", "b"] and listing.drafters[0].hidden_size == 64
    assert "sticky" in listing.policies and listing.max_new_tokens_cap == 64 and listing.tree.total_tokens == 8


# ----- validation -----

@pytest.mark.parametrize("case, fields, code", bad_requests(cap=64, max_prompt=200), ids=lambda v: str(v))
def test_bad_requests_get_their_status(models, core, case, fields, code):
    with pytest.raises(RequestError) as error:
        parse_request(pb.GenerateRequest(**fields), core.format, make_config(models))
    assert error.value.code == code and error.value.message
    assert pickle.loads(pickle.dumps(error.value)).code == code  # it crosses Ray's process boundaries


def test_request_defaults_and_assignment_keys(models, core):
    config = make_config(models)
    parsed = parse_request(pb.GenerateRequest(prompt=PROMPT), core.format, config)
    assert parsed.policy.name == "probe" and parsed.params == SamplingParams(max_new_tokens=24)
    as_messages = parse_request(pb.GenerateRequest(messages=[pb.ChatMessage(role="user", content=PROMPT),
                                                            pb.ChatMessage(role="assistant", content="5"),
                                                            pb.ChatMessage(role="user", content="Why?")]),
                                core.format, config)
    assert as_messages.assignment_key == parsed.assignment_key  # same first user turn: same conversation
    assert parse_request(pb.GenerateRequest(prompt_token_ids=[5, 6]), core.format, config).assignment_key is None
    assert parse_request(pb.GenerateRequest(prompt=PROMPT, policy="single"), core.format, config).assignment_key \
        is None   # only assignable policies (sticky, probe) use the assignment cache


# ----- text, affinity, pickling -----

def test_text_deltas_hold_back_split_characters(tokenizer):
    text = "Pi ≈ 3.14 🙂 done"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    deltas = TextDeltas(tokenizer)
    parts = [deltas.add([t]) for t in ids]
    assert all("\ufffd" not in p for p in parts)
    assert "".join(parts) + deltas.finish(text) == text


def test_affinity_router_keeps_a_session_on_one_replica():
    import asyncio

    router = SessionAffinityRouter.__new__(SessionAffinityRouter)  # choose_replicas needs no router state
    replicas = [SimpleNamespace(replica_id=SimpleNamespace(unique_id=f"r{i}")) for i in range(4)]
    request = lambda sid: SimpleNamespace(metadata=SimpleNamespace(session_id=sid))
    choose = lambda sid, cands: asyncio.run(router.choose_replicas(cands, request(sid)))
    firsts = {}
    for sid in (f"s{i}" for i in range(40)):
        ranks = choose(sid, replicas)
        assert len(ranks[0]) == 1 and len(ranks[1]) == 2 and ranks[0][0] not in ranks[1]
        assert choose(sid, list(reversed(replicas)))[0] == ranks[0]  # independent of the candidates' order
        firsts[sid] = ranks[0][0].replica_id.unique_id
    assert len(set(firsts.values())) == 4  # sessions spread over the replicas
    moved = [sid for sid in firsts if choose(sid, replicas[:3])[0][0].replica_id.unique_id != firsts[sid]]
    assert all(firsts[sid] == "r3" for sid in moved)  # removing r3 moves only r3's sessions
    assert len(choose("", replicas)) == 1 and len(choose("", replicas)[0]) == 2


def test_generated_messages_pickle_by_their_package_module():
    request = pb.GenerateRequest(prompt="x")
    assert type(request).__module__ == "services.protos_gen.taps.v1.taps_pb2"
    assert pickle.loads(pickle.dumps(request)) == request


# ----- Serve config and KubeRay manifest -----

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("source", ["defaults", "local.yaml", "gpu.yaml"])
def test_serve_config_validates_and_its_import_paths_resolve(source):
    config = ServeConfig() if source == "defaults" else load_serve_config(ROOT / "configs" / "serve" / source)
    schema = ServeDeploySchema.model_validate(serve_config_dict(config))
    assert [a.name for a in schema.applications] == [*(f"drafter-{n}" for n in config.drafters), "verifier", "router"]
    assert [a.route_prefix for a in schema.applications][-1] == "/"
    for spec in app_specs(config):
        assert callable(spec.builder())
    router_args = next(s for s in app_specs(config) if s.name == "router").args["config"]
    rebuilt = ServeConfig.model_validate(router_args)
    assert rebuilt.router == config.router and rebuilt.tree == config.tree and rebuilt.target == config.target


def test_replicas_must_fit_the_machine():
    config = load_serve_config(ROOT / "configs" / "serve" / "local.yaml")
    assert required_resources(config) == {"CPU": 1.0, "GPU": 0.0}  # 4 applications at a quarter core each
    check_fits(config, num_cpus=2, num_gpus=0)
    with pytest.raises(ValueError, match="need 1 CPUs but this machine offers 0.5"):
        check_fits(config, num_cpus=0.5, num_gpus=0)
    gpu = load_serve_config(ROOT / "configs" / "serve" / "gpu.yaml")
    with pytest.raises(ValueError, match="GPUs"):
        check_fits(gpu, num_cpus=64, num_gpus=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_committed_rayservice_matches_the_generator():
    """k8s/rayservice.yaml cannot go stale: its serveConfigV2 is the generator's output for configs/serve/gpu.yaml
    (regenerate with the command in the manifest's first line)."""
    from services.kuberay import rayservice_manifest

    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    config = load_serve_config(ROOT / "configs" / "serve" / "gpu.yaml")
    serve_config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve_config == serve_config_dict(config, http_port=8000)
    ServeDeploySchema.model_validate(serve_config)
    image = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert manifest == yaml.safe_load(yaml.safe_dump(rayservice_manifest(config, image)))
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {p["port"] for p in manifest["spec"]["serveService"]["spec"]["ports"]} == {8000, config.router.grpc_port}
    assert math.isclose(sum(d["ray_actor_options"].get("num_gpus", 0) for a in serve_config["applications"]
                            for d in a["deployments"]), 1.5)


def test_kubernetes_pods_run_unprivileged_with_credentials_only_from_secrets():
    """No credential in a manifest: the API key digests and the Redis URL come from Secrets; every container runs
    as a non-root user without privilege escalation; only the Ray pods may reach Redis."""
    manifest = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    redis_docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "k8s" / "redis.yaml").read_text())}
    config = load_serve_config(ROOT / "configs" / "serve" / "gpu.yaml")
    assert config.router.redis_url is None and config.router.api_keys is not None
    for pod in pods + [redis_docs["Deployment"]["spec"]["template"]]:
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    for pod in pods:
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["TAPS_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "taps-api-keys"
        assert env["TAPS_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "taps-redis"
    allowed = redis_docs["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert all(allowed.items() <= pod["metadata"]["labels"].items() for pod in pods)
    assert redis_docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == \
        redis_docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert "requirepass" in " ".join(redis_docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]["command"])


def test_a_refused_stream_raises_what_the_proxy_unpickles_without_importing_torch():
    """Ray's gRPC proxy unpickles the exception a stream ends with; one that needs this package imported first
    stalled the proxy for seconds (it loads torch). The status code travels on the context."""
    import asyncio
    import subprocess
    import sys

    from services.router import Router

    async def refused(request):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty")
        yield  # an async generator, like Router._steps

    context = SimpleNamespace(code=None, set_code=lambda c: setattr(context, "code", c), set_details=lambda d: None,
                              invocation_metadata=lambda: [])
    router = SimpleNamespace(_steps=refused, _refuse=lambda e, r, c: c.set_code(e.code),
                             core=SimpleNamespace(authorize=lambda metadata: None))

    async def consume():
        async for _ in Router.func_or_class.GenerateStream(router, pb.GenerateRequest(), context):
            pass
    with pytest.raises(Exception) as raised:
        asyncio.run(consume())
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT and "prompt is empty" in str(raised.value)
    script = "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); assert 'torch' not in sys.modules, 1"
    subprocess.run([sys.executable, "-c", script], input=pickle.dumps(raised.value), check=True)


def test_api_keys_refuse_missing_and_wrong_keys_before_any_work(models, servers, tmp_path, monkeypatch):
    from services.auth import digest

    keys = tmp_path / "keys"
    keys.write_text(f"# team keys\n{digest('alpha-key')}\n")
    monkeypatch.setenv("TAPS_TEST_KEYS", f"{digest('beta-key')}, {digest('gamma-key')}")
    drafters, verifier = servers
    handles = {name: InProcessHandle(server) for name, server in drafters.items()}
    core = RouterCore(make_config(models, api_keys={"env": "TAPS_TEST_KEYS", "file": str(keys)}),
                      load_prompt_format(models["target"]), handles, InProcessHandle(verifier),
                      LocalAssignmentCache(60.0), RouterMetrics())
    for metadata, code in [([], grpc.StatusCode.UNAUTHENTICATED),
                           ([("authorization", "Basic alpha-key")], grpc.StatusCode.UNAUTHENTICATED),
                           ([("authorization", "Bearer wrong")], grpc.StatusCode.PERMISSION_DENIED)]:
        with pytest.raises(RequestError) as refused:
            core.authorize(metadata)
        assert refused.value.code == code
    for key in ("alpha-key", "beta-key", "gamma-key"):
        core.authorize([("application", "router"), ("Authorization", f"Bearer {key}")])
    open_core = RouterCore(make_config(models), load_prompt_format(models["target"]), handles,
                           InProcessHandle(verifier), LocalAssignmentCache(60.0), RouterMetrics())
    open_core.authorize([])  # no keys configured: everyone may call


@pytest.mark.parametrize("keys, env, message", [
    ({"env": "TAPS_NO_SUCH_VAR"}, None, "TAPS_NO_SUCH_VAR is not set"),
    ({"env": "TAPS_TEST_KEYS"}, "plain-text-key", "not a SHA-256 hex digest"),
    ({"env": "TAPS_TEST_KEYS"}, " , ", "no key digests"),
    ({"file": "missing-file"}, None, "cannot read"),
])
def test_bad_api_key_sources_are_clear_errors(keys, env, message, monkeypatch):
    from services.auth import load_digests
    from services.config import ApiKeys

    if env is not None:
        monkeypatch.setenv("TAPS_TEST_KEYS", env)
    with pytest.raises(ValueError, match=message):
        load_digests(ApiKeys.model_validate(keys))
    with pytest.raises(ValueError, match="needs `env`"):
        ApiKeys.model_validate({})


def test_the_image_installs_what_make_install_installs():
    """The Dockerfile's base image is the Ray version the project pins and the manifest names, and it installs
    the same things as `make install`: this project with its `dev` extra (pyproject.toml's pins) and the same
    pinned GGUF package."""
    import re
    import tomllib

    from services.kuberay import RAY_VERSION

    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(p for p in pins if p.startswith("ray[serve]==")).split("==")[1]
    assert re.search(rf"^ARG RAY_IMAGE=rayproject/ray:{re.escape(ray_pin)}-py311-gpu$", dockerfile, re.M)
    assert ray_pin == RAY_VERSION
    make_extras = re.search(r"pip install --quiet -e '\.\[(\w+)\]'", makefile).group(1)
    assert f'"taps[{make_extras}] @ file://' in dockerfile
    extra_packages = lambda text: sorted(re.findall(r"pip install [^\n]*?([\w.-]+==[\w.]+)", text))
    assert extra_packages(dockerfile) == extra_packages(makefile) != []
    assert re.search(r"^USER 1000:100$", dockerfile, re.M)


def test_exact_numerics_computes_in_fp32_everywhere_and_refuses_a_lower_precision(models):
    from taps_engine.settings import numerics_dtype

    assert numerics_dtype("auto", "exact") == numerics_dtype("fp32", "exact") == "fp32"
    assert numerics_dtype("bf16", "fast") == "bf16"
    with pytest.raises(ValueError, match="cannot be combined with dtype 'bf16'"):
        numerics_dtype("bf16", "exact")
    config = ServeConfig.model_validate({"target": models["target"], "dtype": "auto", "numerics": "exact",
                                         "drafters": {"a": {"path": models["heads"]["a"]}}})
    assert {spec.name: spec.args["dtype"] for spec in app_specs(config) if "dtype" in spec.args} == \
        {"drafter-a": "fp32", "verifier": "fp32"}


def test_exposed_services_and_drafters_served_elsewhere_shape_the_applications(models):
    from services.app import grpc_options

    base = {"target": models["target"], "dtype": "fp32",
            "drafters": {"a": {"path": models["heads"]["a"]},
                         "far": {"address": "drafters.example:9000", "application": "drafter-math"},
                         "near": {"path": models["heads"]["b"], "colocated": True}}}
    config = ServeConfig.model_validate({**base, "router": {"transport": "grpc"}})
    specs = {s.name: s for s in app_specs(config)}
    assert set(specs) == {"drafter-a", "verifier", "router"}, "drafters with an address or co-located: no app"
    assert specs["verifier"].args["drafters"] == {"near": models["heads"]["b"]}
    assert specs["drafter-a"].route_prefix == "/drafter-a" and specs["verifier"].route_prefix == "/verifier"
    assert any("DrafterServicer" in f for f in grpc_options(config)["grpc_servicer_functions"])
    hidden = ServeConfig.model_validate(base)
    assert {s.name: s.route_prefix for s in app_specs(hidden)} == {"drafter-a": None, "verifier": None, "router": "/"}
    assert not any("DrafterServicer" in f for f in grpc_options(hidden)["grpc_servicer_functions"])
    for bad, message in [({"address": "no-port"}, "HOST:PORT"), ({"application": "x"}, "set address too"),
                         ({"address": "h:1", "path": "/x"}, "drop path"),
                         ({"address": "h:1", "colocated": True}, "cannot be co-located")]:
        with pytest.raises(ValueError, match=message):
            ServeConfig.model_validate({**base, "drafters": {"z": bad}})
