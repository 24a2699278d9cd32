"""One generation request over remote drafters and a remote verifier: the router's work, without Ray.

`RouterCore` validates a request (services/validation.py), picks the policy and, for `sticky` and `probe`, looks up
the conversation's drafter in the assignment cache (a hit skips exploration; a miss explores and stores the choice),
then runs the engine's own decoding loop with remote drafters and a remote verifier (services/remote.py), yielding
one chunk per committed step. Whatever happens (completion, an error, a stream closed early), the sessions it
opened on the drafter and verifier replicas are released. Handles are anything with Ray Serve's
`options(...).remote(...)` API, so tests drive it with in-process servers.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping

import grpc
from grpc_health.v1 import health_pb2

from taps_engine.decoding import Decoder, StepEvent
from taps_engine.economics import CostModel
from taps_engine.policies import POLICIES, Decision
from taps_engine.prompt import PromptFormat

from .assignments import Assignment, AssignmentCache
from .auth import authorize, load_digests
from .breaker import Breaker
from .codec import settings_to_proto
from .config import ServeConfig
from .prometheus import RouterMetrics
from .protos_gen.taps.v1 import taps_pb2 as pb
from .remote import (VERIFIER, ColocatedProposer, CostsUnmeasured, RemoteProposer, RemoteVerifier, VerifierUnavailable,
                     drafter_key, release)
from .results import FINISH, TextDeltas, decision_proto, generation_stats, step_stats
from .validation import ParsedRequest, RequestError, parse_request

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 5.0
HEALTH_TIMEOUT_S = 5.0
COSTS_RETRY_S = 60.0   # how long a router serves fixed trees after a verifier could not measure its cost curve


class RouterCore:

    def __init__(self, config: ServeConfig, prompt_format: PromptFormat, drafters: Mapping[str, Any], verifier: Any,
                 cache: AssignmentCache, metrics: RouterMetrics) -> None:
        self.config = config
        self.format = prompt_format
        self.drafters = dict(drafters)
        self.verifier = verifier
        self.cache = cache
        self.metrics = metrics
        self.tree = config.tree
        limits = config.router
        self._probed = {VERIFIER: verifier, **{drafter_key(name): h for name, h in self.drafters.items()}}
        self.breaker = Breaker(self._probe, limits.breaker_cooldown_s, limits.breaker_probe_interval_s)
        self.key_digests = load_digests(limits.api_keys) if limits.api_keys is not None else None
        # cost-aware trees: the verifier's cost curve, fetched once; per policy, a cost model all requests fork
        # (one calibration they all teach)
        self._verify_ms: dict[int, float] | None = None
        self._costs_retry_at = 0.0
        self._costs_lock = threading.Lock()
        self._cost_models: dict[str, CostModel] = {}

    def authorize(self, metadata: Iterable[tuple[str, str]]) -> None:
        """RequestError (UNAUTHENTICATED / PERMISSION_DENIED) unless the call carries an accepted API key."""
        authorize(metadata, self.key_digests)

    def _probe(self, key: str) -> None:
        """Raises unless the deployment named by a breaker key answers its `Info` call (one attempt, no retry:
        the breaker probes again anyway)."""
        self._probed[key].options(method_name="Info").remote(pb.InfoRequest().SerializeToString()).result(
            timeout_s=HEALTH_TIMEOUT_S)

    def list_drafters(self) -> pb.ListDraftersResponse:
        infos = [pb.DrafterInfo(name=name, method="random" if d.path is None and d.deployed_here else d.method,
                                target=self.config.target, hidden_size=self.format.hidden_size,
                                path=str(d.path or ""))
                 for name, d in self.config.drafters.items()]
        limits = self.config.router
        return pb.ListDraftersResponse(target=self.config.target, drafters=infos, policies=POLICIES,
                                       default_policy=limits.default_policy,
                                       max_new_tokens_cap=limits.max_new_tokens_cap,
                                       max_prompt_tokens=limits.max_prompt_tokens,
                                       tree=settings_to_proto(self.tree))

    def health(self) -> health_pb2.HealthCheckResponse.ServingStatus:
        """SERVING when the verifier answers (without it nothing can be generated); drafters are optional."""
        if not self.breaker.up(VERIFIER):
            return health_pb2.HealthCheckResponse.NOT_SERVING
        try:
            self._probe(VERIFIER)
        except Exception as e:
            self.breaker.failed(VERIFIER, f"health check: {type(e).__name__}: {e}")
            return health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse.SERVING

    def _cached_assignment(self, parsed: ParsedRequest) -> Assignment | None:
        if parsed.drafter is not None or parsed.assignment_key is None:
            return None
        found = self.cache.get(parsed.assignment_key)
        if found is not None and found.drafter not in self.drafters:  # the drafter was removed from the config
            found = None
        self.metrics.assignment(found is not None)
        return found

    def _remember(self, parsed: ParsedRequest, cached: Assignment | None, decision: Decision) -> None:
        """Store an explored choice, or count another request under a cached one (refreshing its TTL)."""
        chosen = decision.drafter
        if parsed.assignment_key is None or parsed.drafter is not None or chosen is None \
                or chosen in decision.unavailable:
            return
        if cached is not None:
            cached.requests += 1
            self.cache.put(parsed.assignment_key, cached)
        else:
            self.cache.put(parsed.assignment_key, Assignment(chosen, decision.scores))

    def chunks(self, request: pb.GenerateRequest) -> Iterator[pb.GenerateChunk]:
        """One chunk per committed step, the last one with the finish reason, decision and stats.

        Raises RequestError (with its gRPC status) for refused requests and when the verifier is unavailable.
        Whenever the iteration ends (finished, failed, or closed early), the request's replica sessions are freed.
        """
        parsed = parse_request(request, self.format, self.config)
        if not self.breaker.up(VERIFIER):
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the verifier is unavailable (its replicas are down or "
                                                            "restarting); retry later")
        cached = self._cached_assignment(parsed)
        requested = parsed.drafter or (cached.drafter if cached is not None else None)
        session_id = uuid.uuid4().hex
        limits = self.config.router
        verifier = RemoteVerifier(self.verifier, session_id, limits.verifier_timeout_s, self.breaker)
        proposers = {name: self._proposer(name, verifier, session_id)
                     for name in parsed.policy.sessions(list(self.drafters), requested)}
        remote = [d for d in proposers.values() if isinstance(d, RemoteProposer)]
        costs = self._cost_model(parsed.policy.name, verifier)   # before any session is opened on a replica
        tree = self.tree if costs is not None else replace(self.tree, cost_aware=False)
        decoder = Decoder(self.format, proposers, parsed.policy.name, tree, verifier=verifier,
                          fallback=self.config.fallback, costs=costs)
        events = decoder.stream(parsed.prompt_ids, parsed.params, requested)
        try:
            yield from self._chunks(events, parsed, cached)
        finally:
            events.close()
            self.metrics.state_losses(verifier.rebuilds, {d.name: d.resends for d in remote})
            release([verifier] + [d for d in remote if not d.failed], RELEASE_TIMEOUT_S)

    def _cost_model(self, policy: str, verifier: RemoteVerifier) -> CostModel | None:
        """A request's cost model for a cost-aware tree: the verifier replica's cost curve, this request's own step
        rates, and the policy's shared calibration. None for a fixed tree, and while the verifier cannot measure its
        curve (the request then drafts the tree unpruned; asked again after COSTS_RETRY_S). RequestError
        UNAVAILABLE when the verifier does not answer."""
        if not self.tree.cost_aware:
            return None
        with self._costs_lock:
            if self._verify_ms is None and time.monotonic() >= self._costs_retry_at:
                try:
                    self._verify_ms = verifier.verify_costs()
                except VerifierUnavailable as e:
                    raise RequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from e
                except CostsUnmeasured as e:
                    log.warning("%s; serving fixed trees, asking again in %.0f s", e, COSTS_RETRY_S)
                    self._costs_retry_at = time.monotonic() + COSTS_RETRY_S
            if self._verify_ms is None:
                return None
            template = self._cost_models.get(policy)
            if template is None:
                template = self._cost_models[policy] = CostModel(self._verify_ms)
        return template.fork()

    def _proposer(self, name: str, verifier: RemoteVerifier, session_id: str) -> RemoteProposer | ColocatedProposer:
        drafter = self.config.drafters[name]
        if drafter.colocated:
            return ColocatedProposer(name, verifier)
        return RemoteProposer(name, self.drafters[name], session_id, self.config.router.drafter_timeout_s,
                              verifier.features, self.breaker, served_as=name if drafter.deployed_here else "")

    def _chunks(self, events: Iterator[StepEvent], parsed: ParsedRequest,
                cached: Assignment | None) -> Iterator[pb.GenerateChunk]:
        texts = TextDeltas(self.format.tokenizer)
        started = False
        while True:
            t0 = time.perf_counter()
            try:
                event = next(events)
            except StopIteration:
                return
            except ValueError as e:  # before the first event: the prompt does not fit the target's context
                if started:
                    raise
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from e
            except VerifierUnavailable as e:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, str(e)) from e
            started = True
            result = event.result
            if result is None:
                if event.step is not None:
                    self.metrics.step(parsed.policy.name, event.step, time.perf_counter() - t0)
                yield pb.GenerateChunk(token_ids=event.tokens, text=texts.add(event.tokens),
                                       step=step_stats(event.step) if event.step is not None else None)
                continue
            self.metrics.finished(parsed.policy.name, result)
            self._remember(parsed, cached, result.decision)
            decision = decision_proto(result.decision, from_cache=cached is not None,
                                      client_assigned=parsed.drafter is not None and parsed.policy.assignable)
            yield pb.GenerateChunk(text=texts.finish(result.text), finish_reason=FINISH[result.finish_reason],
                                   policy=result.policy, decision=decision, stats=generation_stats(result))
