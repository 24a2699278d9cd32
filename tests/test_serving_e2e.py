"""The serving system end to end: a real local Ray Serve (two drafter applications, one with 2 replicas, the
verifier with a co-located drafter, the routers), a real redis-server, real gRPC. Answers must equal the
in-process engine's greedy output token for token.

One Ray cluster serves the whole module (starting one takes most of the module's time); the tests that break it
(deleting the drafter-b and verifier applications) come last, in file order.
"""

import concurrent.futures
import os
import time
from types import SimpleNamespace

import grpc
import pytest
import ray
import redis
import torch
from ray import serve

from conftest import RedisProcess
from serving_helpers import PROMPT, TREE, bad_requests, wait_until
from services.app import app_specs, free_port, run_local, shutdown_local
from services.auth import digest
from services.client import TapsClient, TapsError
from services.config import DrafterConfig, ServeConfig
from services.protos_gen.taps.v1 import taps_pb2_grpc
from services.router import build_router
from services.protos_gen.taps.v1 import taps_pb2 as pb
from services.codec import settings_to_proto, to_proto
from taps_engine import Decoder, PlainDecoder
from taps_engine.tree import TreeSettings
from taps_engine.head import load_head
from taps_engine.target import load_target

pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
CAP, MAX_PROMPT = 64, 200
API_KEY, KEYS_ENV = "e2e-test-key", "TAPS_E2E_KEYS"
MESSAGE_LIMIT = 4 * 1024 * 1024
MESSAGES = [{"role": "user", "content": PROMPT}]


def replica(n: int = 1) -> dict:
    return {"num_replicas": n, "ray_actor_options": {"num_cpus": 0.1}}


@pytest.fixture(scope="module")
def engine(models):
    target = load_target(models["target"], dtype="fp32")
    heads = {name: load_head(path, target.model) for name, path in models["heads"].items()}

    def generate(policy: str, **kwargs):
        return Decoder(target, heads, policy, TreeSettings(**TREE)).generate(MESSAGES, **kwargs)
    return SimpleNamespace(target=target, generate=generate)


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory):
    """This module's own redis-server: a test stops it."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(models, redis_process, tmp_path_factory):
    os.environ[KEYS_ENV] = digest(API_KEY)  # the local Ray's replicas inherit it
    config = ServeConfig.model_validate({
        "target": models["target"], "dtype": "fp32", "tree": TREE,
        "fallback": False,   # every step drafts, as the engine references do: step counts and τ compare exactly
        "drafters": {"a": {"path": models["heads"]["a"], "deployment": replica()},
                     "b": {"path": models["heads"]["b"], "deployment": replica(2)},
                     "c": {"path": models["heads"]["a"], "colocated": True}},   # in the verifier's replica
        # tiny models verify in milliseconds: give concurrent streams time to meet in a batch
        "verifier": {"deployment": replica(), "batch_wait_s": 0.05},
        "router": {"grpc_port": free_port(), "redis_url": redis_process.url, "default_max_new_tokens": 24,
                   "max_new_tokens_cap": CAP, "max_prompt_tokens": MAX_PROMPT, "drafter_timeout_s": 5,
                   "verifier_timeout_s": 60, "breaker_cooldown_s": 0.5, "api_keys": {"env": KEYS_ENV},
                   "expose_services": True, "max_message_bytes": MESSAGE_LIMIT, "deployment": replica()}})
    with pytest.MonkeyPatch.context() as env:   # the replicas keep the environment they started with
        env.setenv("TAPS_HOME", str(tmp_path_factory.mktemp("taps-home")))   # where the verifier caches its curve
        address = run_local(config, num_cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray")))
    a, b, c = (config.drafters[name] for name in "abc")

    def variant(drafters: dict, tree: TreeSettings = config.tree, **router) -> ServeConfig:
        return config.model_copy(update={"drafters": drafters, "tree": tree,
                                         "router": config.router.model_copy(update=router)})

    # the default route serves drafters a and b; more routers on the same Serve instance: every service over gRPC
    # through the proxy, the handle transport with drafter b reached over gRPC as if it ran elsewhere (a mixed
    # deployment), and a router with drafter a beside the co-located c
    variants = {"router": variant({"a": a, "b": b}),
                "router-grpc": variant({"a": a, "b": b}, transport="grpc"),
                "router-mixed": variant({"a": a, "b": DrafterConfig(address=address, application="drafter-b")}),
                "router-colocated": variant({"a": a, "c": c}),
                "router-cost": variant({"a": a, "c": c}, TreeSettings(**TREE, cost_aware=True))}
    clients = {}
    for name, changed in variants.items():
        spec = next(s for s in app_specs(changed) if s.name == "router")
        serve.run(build_router(spec.args, spec.options()), name=name,
                  route_prefix=spec.route_prefix if name == "router" else f"/{name}")
        clients[name] = TapsClient(address, timeout_s=120, api_key=API_KEY, application=name)
    client, colocated, cost = clients.pop("router"), clients.pop("router-colocated"), clients.pop("router-cost")
    yield SimpleNamespace(client=client, address=address, routers=clients, colocated=colocated, cost=cost)
    for open_client in [client, colocated, cost, *clients.values()]:
        open_client.close()
    shutdown_local()


def verifier_info() -> pb.VerifierInfo:
    handle = serve.get_deployment_handle("Verifier", "verifier").options(method_name="Info")
    return pb.VerifierInfo.FromString(handle.remote(pb.InfoRequest().SerializeToString()).result())


def verifier_sessions() -> int:
    return verifier_info().sessions


def streamed(client, **fields):
    chunks = list(client.stream(PROMPT, **fields))
    return [t for c in chunks for t in c.token_ids], "".join(c.text for c in chunks), chunks[-1]


def test_health_and_listing(cluster):
    assert cluster.client.health() == "SERVING"
    assert cluster.client.health("taps.v1.Router") == "SERVING"
    with pytest.raises(TapsError) as error:
        cluster.client.health("some.Other")
    assert error.value.code == grpc.StatusCode.NOT_FOUND
    listing = cluster.client.list_drafters()
    assert [d.name for d in listing.drafters] == ["a", "b"] and listing.max_new_tokens_cap == CAP


def test_calls_without_a_valid_key_are_refused_and_health_stays_open(cluster):
    address = cluster.client.address
    for key, code in [(None, grpc.StatusCode.UNAUTHENTICATED), ("wrong", grpc.StatusCode.PERMISSION_DENIED)]:
        with TapsClient(address, timeout_s=30, api_key=key) as stranger:
            sessions = verifier_sessions()
            for call in (lambda: stranger.generate(PROMPT), lambda: list(stranger.stream(PROMPT)),
                         stranger.list_drafters):
                with pytest.raises(TapsError) as refused:
                    call()
                assert refused.value.code == code, refused.value
            assert verifier_sessions() == sessions, "refused before any decoding"
            assert stranger.health() == "SERVING"


@pytest.mark.parametrize("policy", ["plain", "single", "confidence", "merged", "sticky", "probe"])
def test_unary_and_stream_equal_the_engine(cluster, engine, policy):
    expected = engine.generate(policy, max_new_tokens=24)
    # a conversation of its own: sticky and probe share the assignment cache, and a cached choice skips exploring
    response = cluster.client.generate(PROMPT, policy=policy, conversation_id=f"unary-{policy}")
    assert list(response.token_ids) == expected.token_ids and response.text == expected.text
    assert response.stats.mean_acceptance_length == pytest.approx(expected.tau)
    assert response.stats.n_steps == len(expected.steps) > 0
    tokens, text, final = streamed(cluster.client, policy=policy)
    assert tokens == expected.token_ids and text == expected.text
    assert final.finish_reason == response.finish_reason != pb.FINISH_REASON_UNSPECIFIED


def test_second_request_of_a_conversation_hits_the_redis_assignment(cluster, engine, redis_process):
    first = cluster.client.generate(PROMPT, policy="sticky", conversation_id="conversation-1")
    assert not first.decision.from_assignment_cache and first.decision.drafter == "a"
    stored = redis.Redis.from_url(redis_process.url).keys("taps:assignment:*")
    assert len(stored) >= 1
    second = cluster.client.generate(PROMPT, policy="sticky", conversation_id="conversation-1")
    assert second.decision.from_assignment_cache and second.decision.drafter == "a"
    assert not second.decision.scores  # no exploration
    assert list(second.token_ids) == engine.generate("sticky", max_new_tokens=24, drafter="a").token_ids


def test_requests_succeed_with_redis_stopped(cluster, engine, redis_process):
    redis_process.stop()
    expected = engine.generate("sticky", max_new_tokens=24).token_ids
    for conversation in ("after-redis-1", "after-redis-1"):
        response = cluster.client.generate(PROMPT, policy="sticky", conversation_id=conversation)
        assert list(response.token_ids) == expected and not response.decision.from_assignment_cache


@pytest.mark.parametrize("case, fields, code", bad_requests(CAP, MAX_PROMPT), ids=lambda v: str(v))
def test_bad_input_gets_its_status_code(cluster, case, fields, code):
    with pytest.raises(grpc.RpcError) as error:
        cluster.client.router.Generate(pb.GenerateRequest(**fields), metadata=cluster.client.metadata, timeout=60)
    assert error.value.code() == code, error.value.details()
    assert error.value.details()


def test_bad_input_on_a_stream_gets_its_status_code(cluster):
    with pytest.raises(TapsError) as error:
        streamed(cluster.client, policy="fastest")
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT and "unknown policy" in error.value.details


def test_a_drafter_with_two_replicas_serves_correctly(cluster, engine):
    status = serve.status().applications["drafter-b"].deployments["Drafter"]
    assert status.replica_states.get("RUNNING") == 2
    expected = engine.generate("single", max_new_tokens=24, drafter="b").token_ids
    for _ in range(4):
        response = cluster.client.generate(PROMPT, policy="single", drafter="b")
        assert list(response.token_ids) == expected and response.decision.drafter == "b"


def test_concurrent_streams_are_verified_together_and_answer_as_alone(cluster, engine):
    """Four clients at once: the verifier replica runs their steps in shared forwards, and each answer is the
    one the request gets alone (the engine's, for the test prompt)."""
    requests = [dict(prompt=PROMPT, policy="single", drafter="a"),
                dict(prompt=PROMPT + " Twice.", policy="confidence"),
                dict(prompt="Name a color.", policy="merged", temperature=0.8, seed=3),
                dict(prompt=PROMPT, policy="merged")]
    alone = [list(cluster.client.generate(**r).token_ids) for r in requests]
    assert alone[0] == engine.generate("single", max_new_tokens=24, drafter="a").token_ids
    assert alone[3] == engine.generate("merged", max_new_tokens=24).token_ids
    before = verifier_info()
    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: list(cluster.client.generate(**r).token_ids), requests))
    after = verifier_info()
    assert together == alone
    forwards, steps = after.verify_forwards - before.verify_forwards, after.verified_steps - before.verified_steps
    assert steps > 1.3 * forwards, f"{steps} steps in {forwards} forwards: the streams were not batched"


def drafter_info(application: str) -> pb.DrafterInfo:
    handle = serve.get_deployment_handle("Drafter", application).options(method_name="Info")
    return pb.DrafterInfo.FromString(handle.remote(pb.InfoRequest().SerializeToString()).result())


def test_a_colocated_drafter_drafts_in_the_verifier_replica_as_the_engine_does(cluster, engine):
    """Drafter c (head a) runs in the verifier's replica: its answers are the engine's with head a, and drafter
    a's own replica does no work for them; beside the remote a, confidence routing answers as the engine does."""
    expected = engine.generate("single", max_new_tokens=24, drafter="a")
    before = drafter_info("drafter-a").drafted_steps
    response = cluster.colocated.generate(PROMPT, policy="single", drafter="c")
    assert list(response.token_ids) == expected.token_ids and response.decision.drafter == "c"
    assert response.stats.mean_acceptance_length == pytest.approx(expected.tau)
    assert drafter_info("drafter-a").drafted_steps == before
    routed = cluster.colocated.generate(PROMPT, policy="confidence")
    assert list(routed.token_ids) == expected.token_ids and not routed.decision.unavailable
    assert set(routed.stats.drafter_selections) <= {"a", "c"} and routed.stats.mean_acceptance_length > 1.0


def test_a_cost_aware_tree_is_served_with_the_verifiers_cost_curve(cluster, engine):
    """A router serving a cost-aware tree works on the real cluster, over a remote drafter and a co-located one:
    output stays plain greedy decoding's, and the verifier answers its measured cost curve only when asked (the
    pruning itself, and the curve asked for once per router, are checked in test_serving_units.py)."""
    expected = engine.generate("plain", max_new_tokens=24)
    for policy in ("confidence", "single"):
        tokens, text, final = streamed(cluster.cost, policy=policy, drafter="c" if policy == "single" else "")
        assert tokens == expected.token_ids and text == expected.text
        assert final.stats.n_steps > 0 and final.stats.mean_acceptance_length >= 1.0
    costs = service_call(cluster, "Verifier", "verifier", "Info", pb.InfoRequest(verify_costs=True)).verify_ms
    assert sorted(costs) == [1, 2, 4, 8, 16, 32, 64] and all(ms > 0 for ms in costs.values())
    assert not verifier_info().verify_ms, "only asked for"


def test_session_affinity_keeps_a_session_on_the_replica_holding_it(cluster):
    """Calls of one session reach the replica that holds its state: with 2 replicas and random routing, 12
    in-step updates would all find their session with probability 2^-12."""
    handle = serve.get_deployment_handle("Drafter", "drafter-b").options(method_name="Propose", session_id="aff-1")
    settings = pb.TreeSettings(**TREE)

    def propose(offset: int) -> pb.ProposeResponse:
        update = pb.PairUpdate(session_id="aff-1", drafter="b", offset=offset, tokens=[7, 8],
                               features=to_proto(torch.zeros(2, 64)))
        request = pb.ProposeRequest(update=update, tree=settings).SerializeToString()
        return pb.ProposeResponse.FromString(handle.remote(request).result(timeout_s=60))

    assert propose(0).HasField("tree")
    assert all(propose(offset).HasField("tree") for offset in range(2, 26, 2))


def test_cancelled_stream_and_expired_deadline_free_the_sessions(cluster):
    stream = cluster.client.stream(PROMPT, policy="merged", max_new_tokens=CAP, ignore_eos=True)
    next(stream)
    stream.close()  # cancels the call
    assert wait_until(lambda: verifier_sessions() == 0)
    with pytest.raises(TapsError) as error:
        cluster.client.generate(PROMPT, policy="merged", max_new_tokens=CAP, ignore_eos=True, timeout_s=0.3)
    assert error.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: verifier_sessions() == 0)


def service_call(cluster, service: str, application: str, method: str, request):
    channel = grpc.insecure_channel(cluster.address, options=[("grpc.max_send_message_length", 64 << 20)])
    stub = getattr(taps_pb2_grpc, f"{service}Stub")(channel)
    try:
        return getattr(stub, method)(request, metadata=[("application", application)], timeout=60)
    finally:
        channel.close()


def test_drafter_and_verifier_answer_over_grpc_with_status_codes(cluster):
    info = service_call(cluster, "Drafter", "drafter-a", "Info", pb.InfoRequest())
    assert info.name == "a" and info.method == "eagle2"
    verifier = service_call(cluster, "Verifier", "verifier", "Info", pb.InfoRequest())
    prefill = service_call(cluster, "Verifier", "verifier", "Prefill",
                           pb.PrefillRequest(session_id="direct", prompt_ids=[1, 2, 3]))
    assert tuple(prefill.features.shape) == (3, verifier.hidden_size)
    update = pb.PairUpdate(session_id="direct", drafter="a", offset=0, tokens=[1, 2],
                           features=to_proto(torch.zeros(3, verifier.hidden_size)))
    refused = [
        ("Drafter", "drafter-a", "Propose", pb.ProposeRequest(update=update, tree=settings_to_proto(TreeSettings(**TREE))),
         "features of shape"),
        ("Verifier", "verifier", "Prefill", pb.PrefillRequest(session_id="x", prompt_ids=[10 ** 8]), "outside"),
        ("Verifier", "verifier", "Features", pb.FeaturesRequest(token_ids=[1, 2], start=5), "outside"),
    ]
    for service, application, method, request, message in refused:
        with pytest.raises(grpc.RpcError) as error:
            service_call(cluster, service, application, method, request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()
    with pytest.raises(grpc.RpcError) as error:  # over the configured message limit
        service_call(cluster, "Verifier", "verifier", "Prefill",
                     pb.PrefillRequest(session_id="big", prompt_ids=[5000] * (MESSAGE_LIMIT // 2)))
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    service_call(cluster, "Verifier", "verifier", "Release", pb.ReleaseRequest(session_id="direct"))


@pytest.mark.parametrize("policy", ["single", "confidence", "merged"])
def test_grpc_and_mixed_transports_answer_like_handles_and_the_engine(cluster, engine, policy):
    expected = engine.generate(policy, max_new_tokens=24).token_ids
    for client in [cluster.client, *cluster.routers.values()]:
        response = client.generate(PROMPT, policy=policy)
        assert list(response.token_ids) == expected and not response.decision.unavailable, client.metadata
        assert response.stats.mean_acceptance_length > 1.0


def kill_replica(app: str, deployment: str) -> None:
    """Kill the one replica actor of a deployment, as a crash would; Ray Serve starts a new one."""
    prefix = f"SERVE_REPLICA::{app}#{deployment}#"
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(prefix)]
    assert len(names) == 1, names
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)


def timed(call):
    start = time.perf_counter()
    return call(), time.perf_counter() - start


def test_a_killed_drafter_is_skipped_at_once_and_taken_back_when_it_restarts(cluster, engine):
    single_a = lambda: cluster.client.generate(PROMPT, policy="single", drafter="a", max_new_tokens=8)
    healthy, healthy_s = timed(single_a)
    assert list(healthy.decision.unavailable) == []
    kill_replica("drafter-a", "Drafter")
    first, first_s = timed(single_a)                      # finds it dead: pays at most the drafter timeout
    second, second_s = timed(single_a)                    # skips it at once
    expected = engine.generate("single", max_new_tokens=8, drafter="a").token_ids
    assert list(first.token_ids) == list(second.token_ids) == expected
    assert list(first.decision.unavailable) == list(second.decision.unavailable) == ["a"]
    assert second_s < healthy_s + 0.5, (healthy_s, first_s, second_s)
    start = time.perf_counter()
    assert wait_until(lambda: not single_a().decision.unavailable, timeout_s=240), "back in use after the restart"
    print(f"dead drafter: first request {first_s:.2f} s, later ones {second_s:.2f} s (healthy {healthy_s:.2f} s); "
          f"back in use {time.perf_counter() - start:.1f} s after the second request")


def test_a_killed_verifier_fails_new_requests_fast_and_in_flight_ones_finish(cluster, engine):
    expected = engine.generate("merged", max_new_tokens=CAP, stop_on_eos=False).token_ids
    chunks = cluster.client.stream(PROMPT, policy="merged", max_new_tokens=CAP, ignore_eos=True)
    received = [next(chunks)]
    kill_replica("verifier", "Verifier")
    killed = time.perf_counter()
    rest = concurrent.futures.ThreadPoolExecutor(1).submit(lambda: list(chunks))
    assert wait_until(lambda: cluster.client.health() == "NOT_SERVING", timeout_s=30)
    start = time.perf_counter()
    with pytest.raises(TapsError) as error:
        cluster.client.generate(PROMPT, policy="single")
    refused_s = time.perf_counter() - start
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and refused_s < 0.5
    received += rest.result(timeout=120)
    assert [t for c in received for t in c.token_ids] == expected, "the in-flight request waited and finished"
    assert wait_until(lambda: cluster.client.health() == "SERVING", timeout_s=60)
    print(f"killed verifier: a new request refused in {refused_s:.2f} s while it was down; "
          f"serving again {time.perf_counter() - killed:.1f} s after the kill")


def test_request_completes_when_a_drafter_application_is_deleted_mid_run(cluster, engine):
    expected = PlainDecoder(engine.target).generate(MESSAGES, max_new_tokens=CAP, stop_on_eos=False).token_ids
    clients = [cluster.client, *cluster.routers.values()]
    streams = [c.stream(PROMPT, policy="merged", max_new_tokens=CAP, ignore_eos=True) for c in clients]
    received = [[next(chunks)] for chunks in streams]
    serve.delete("drafter-b")
    for chunks, got, client in zip(streams, received, clients):
        got += list(chunks)
        assert [t for c in got for t in c.token_ids] == expected, client.metadata
        assert list(got[-1].decision.unavailable) == ["b"], client.metadata
    after = cluster.client.generate(PROMPT, policy="confidence")  # later requests drop it too
    assert list(after.token_ids) == engine.generate("confidence", max_new_tokens=24).token_ids
    assert list(after.decision.unavailable) == ["b"]


def test_verifier_down_is_unavailable(cluster):
    """Once the router knows the verifier is gone (here: its health check found it), requests fail at once."""
    serve.delete("verifier")
    assert cluster.client.health() == "NOT_SERVING"
    start = time.perf_counter()
    with pytest.raises(TapsError) as error:
        cluster.client.generate(PROMPT, policy="single")
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and "verifier" in error.value.details
    with pytest.raises(TapsError) as error:
        streamed(cluster.client, policy="single")
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and time.perf_counter() - start < 1.0
