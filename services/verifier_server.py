"""The target behind the internal `Verifier` protocol: per-session KV caches, verification and acceptance.

Each generation request is one session: a `TargetVerifier` (taps_engine.verifier) holding the KV cache of every
committed token except the pending root in its slot of the replica's shared `SlotCache`, kept in a bounded LRU
(the replica's memory bound). Concurrent sessions' steps are verified together in one target forward
(services/batching.py); each keeps its own tree, mask, sampling state and acceptance, so its output is what it
would be alone. `Verify` carries only
the committed tokens from an offset on (the session protocol of protos/taps/v1/taps.proto): a replica that holds
fewer tokens (after a restart, an eviction, or when the request was routed to another replica) answers `StateMiss`,
and when the caller resends from there it forwards the missing suffix before verifying. Acceptance runs here, with
the caller's generator state, so only the accepted rows' features travel back and sampled output matches the
in-process engine.

This class speaks protobuf messages and knows nothing of Ray; services/deployments.py wraps it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import torch

from taps_engine.acceptance import SamplingParams
from taps_engine.costs import verify_costs
from taps_engine.drafter import Drafter
from taps_engine.target import load_target
from taps_engine.tree import DraftTree, TreeSettings
from taps_engine.slots import SlotCache
from taps_engine.verifier import TargetVerifier, step_batch

from .batching import StepBatcher, skipping_dropped
from .colocated import ColocatedDrafters
from .protos_gen.taps.v1 import taps_pb2 as pb
from .sessions import SessionCache
from .codec import NAMES, asks_from_proto, to_proto, tree_from_proto, tree_to_proto

log = logging.getLogger(__name__)


@dataclass
class VerifierSession:
    verifier: TargetVerifier
    ids: list[int]  # the tokens whose keys and values the cache holds
    dropped: bool = False  # evicted or released: its slot may belong to another session now
    drafters: dict[str, Drafter] = field(default_factory=dict)   # co-located drafters' state (services/colocated.py)
    prefill_features: torch.Tensor | None = None  # features of `ids` while no step has followed the prefill


@dataclass
class _Step:
    session: VerifierSession
    root: int
    tree: DraftTree
    params: SamplingParams
    generator: torch.Generator
    asks: list[tuple[str, TreeSettings]]   # co-located drafters' trees wanted for the next step


def _named(names: list[str], trees: list[DraftTree]) -> list[pb.NamedTree]:
    return [pb.NamedTree(drafter=name, tree=tree_to_proto(tree)) for name, tree in zip(names, trees)]


def _chain(tokens: list[int]) -> DraftTree:
    """A single-path tree: verifying it after its root forwards the tokens causally (a cache catch-up)."""
    n = len(tokens)
    return DraftTree(tokens=torch.tensor(tokens, dtype=torch.long), parents=torch.arange(n) - 1,
                     depths=torch.arange(1, n + 1), scores=torch.zeros(n), entropies=torch.zeros(n),
                     sources=torch.zeros(n, dtype=torch.long))


class VerifierServer:
    def __init__(self, target_spec: str, dtype: str = "auto", cache_size: int = 32, max_batch_size: int = 8,
                 batch_wait_s: float = 0.002, drafters: dict[str, str | None] | None = None) -> None:
        """`drafters`: the co-located drafters' head directories by name (None: a random head)."""
        self.target = load_target(target_spec, dtype=dtype)
        self.kv = SlotCache.for_model(self.target.config, max_slots=cache_size)
        self.colocated = ColocatedDrafters(self.target, drafters or {}, cache_size)
        self.forward_lock = threading.Lock()   # held by every forward on `kv`, and while sessions come and go
        self.sessions: SessionCache[VerifierSession] = SessionCache(cache_size, on_drop=self._drop)
        self.batcher = StepBatcher(self._steps, max_batch_size, batch_wait_s, self.forward_lock,
                                   peers=lambda: len(self.sessions))
        self.verify_ms: dict[int, float] | None = None   # this machine's verify cost curve, once asked for
        shape = self.target.format
        self.info = pb.VerifierInfo(target=target_spec, vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
                                    max_position_embeddings=shape.context_length or 0,
                                    eos_token_ids=sorted(shape.eos_token_ids),
                                    dtype=NAMES[self.target.dtype])
        log.info("verifier ready: %s, %s on %s, up to %d sessions, batches of up to %d steps, co-located drafters: "
                 "%s", target_spec, self.info.dtype, self.target.device, cache_size, max_batch_size,
                 ", ".join(self.colocated.heads) or "none")

    def _drop(self, session: VerifierSession) -> None:
        session.dropped = True
        session.verifier.release()
        self.colocated.release(session)

    def Info(self, request: pb.InfoRequest) -> pb.VerifierInfo:
        info = pb.VerifierInfo()
        info.CopyFrom(self.info)
        info.sessions = len(self.sessions)
        info.verify_forwards, info.verified_steps = self.batcher.batches, self.batcher.steps
        info.verify_seconds = self.batcher.busy_s
        if request.verify_costs:
            try:
                info.verify_ms.update(self._verify_costs())
            except Exception as e:   # a replica that cannot measure its curve still verifies: say why, stay up
                log.exception("measuring the verify cost curve failed")
                info.verify_costs_error = f"the verifier could not measure its verify cost curve: " \
                                          f"{type(e).__name__}: {e}"
        return info

    def _verify_costs(self) -> dict[int, float]:
        """The cost curve cost-aware trees prune by, measured once (cached under TAPS_HOME across restarts) while
        no session's forward runs, so the timings are the target's alone; a failed measurement is retried when
        asked again."""
        with self.forward_lock:
            if self.verify_ms is None:
                self.verify_ms = verify_costs(self.target)
        return self.verify_ms

    def _check_ids(self, ids: list[int], what: str) -> None:
        if not ids:
            raise ValueError(f"{what} is empty")
        vocab = self.target.config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"{what} holds token ids outside [0, {vocab})")

    def _sequence(self, request: pb.VerifyRequest | pb.DraftRequest, what: str) -> list[int]:
        """The committed tokens a session-protocol request carries (the root last), checked."""
        tokens = list(request.tokens)
        self._check_ids(tokens, "tokens")
        if request.offset < 0 or (request.offset == 0 and len(tokens) < 2):
            raise ValueError(f"a {what} request from offset 0 must hold the prompt and the root")
        return tokens

    def _prefilled(self, ids: list[int]) -> tuple[VerifierSession, torch.Tensor, torch.Tensor]:
        self.sessions.make_room()
        verifier = TargetVerifier(self.target, self.kv)
        features, logits = verifier.prefill(ids)
        return VerifierSession(verifier, list(ids), prefill_features=features), features, logits

    def Prefill(self, request: pb.PrefillRequest) -> pb.PrefillResponse:
        ids = list(request.prompt_ids)
        self._check_ids(ids, "prompt_ids")
        with self.forward_lock:
            session, features, logits = self._prefilled(ids)
            self.sessions.put(request.session_id, session)
        return pb.PrefillResponse(features=to_proto(features), logits=to_proto(logits.float()))

    def _session_for(self, session_id: str, offset: int, tokens: list[int]) -> tuple[VerifierSession, bool] | \
            pb.StateMiss:
        """The session with the request's tokens before the root in its cache (and whether a suffix had to be
        forwarded), or the offset to resend from."""
        session = self.sessions.get(session_id)
        held = len(session.ids) if session is not None else 0
        if session is not None and held < offset:
            return pb.StateMiss(resend_from=held, reason="offset ahead")
        if session is not None and held > offset:   # a retried request: start over rather than rewind
            self.sessions.pop(session_id)
            return pb.StateMiss(resend_from=0, reason="offset behind")
        suffix = tokens[:-1]
        if session is None:
            if offset != 0:
                return pb.StateMiss(resend_from=0, reason="no session")
            session = self._prefilled(suffix)[0]
            self.sessions.put(session_id, session)
            return session, True
        if suffix:   # co-located drafters do not see this catch-up: they start over from the history when next used
            self.colocated.release(session)
            session.verifier.verify(suffix[0], _chain(suffix[1:]))
            session.verifier.commit(range(len(suffix)))
            session.ids += suffix
        return session, bool(suffix)

    def Verify(self, request: pb.VerifyRequest) -> pb.VerifyResponse:
        tokens = self._sequence(request, "verify")
        tree = tree_from_proto(request.tree)
        asks = asks_from_proto(request.draft_next)
        self.colocated.check([name for name, _ in asks])
        sampling = request.accept.sampling
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p or 1.0,
                                top_k=sampling.top_k)
        with self.forward_lock:
            found = self._session_for(request.session_id, request.offset, tokens)
        if isinstance(found, pb.StateMiss):
            return pb.VerifyResponse(miss=found)
        session, caught_up = found
        generator = torch.Generator()
        if request.accept.rng_state:
            generator.set_state(torch.frombuffer(bytearray(request.accept.rng_state), dtype=torch.uint8))
        outcome = self.batcher.submit(_Step(session, tokens[-1], tree, params, generator, asks))
        if outcome is None:
            return pb.VerifyResponse(miss=pb.StateMiss(resend_from=0, reason="session evicted"))
        path, bonus, features, next_trees = outcome
        return pb.VerifyResponse(verified=pb.Verified(
            features=to_proto(features), path=path, bonus_token=bonus,
            rng_state=generator.get_state().numpy().tobytes(), caught_up=caught_up,
            next_trees=_named([name for name, _ in asks], next_trees)))

    def _steps(self, steps: list[_Step]) -> list[tuple[list[int], int, torch.Tensor, list[DraftTree]] | None]:
        """The batcher's work (under `forward_lock`): one forward for the steps of sessions still held, then the
        co-located drafters' next trees; None for a session dropped while its step waited."""
        results = skipping_dropped(steps, lambda step: step.session.dropped, lambda held: step_batch(
            [s.session.verifier for s in held], [s.root for s in held], [s.tree for s in held],
            [s.params for s in held], [s.generator for s in held]))
        held = [(step, result) for step, result in zip(steps, results) if result is not None]
        for step, (path, bonus, features) in held:
            accepted = step.tree.tokens[path].tolist()
            step.session.ids += [step.root] + accepted
            self.colocated.extend(step.session, accepted + [bonus], features)
        trees = self._draft_next([(step.session, result[1], name, settings)
                                  for step, result in held for name, settings in step.asks])
        out, taken = [], 0
        for step, result in zip(steps, results):
            n = len(step.asks) if trees else 0
            out.append(None if result is None else (*result, trees[taken:taken + n]))
            taken += n if result is not None else 0
        return out

    def _draft_next(self, asks: list) -> list[DraftTree]:
        """The asked trees, or none when drafting fails: the verified steps stand, and the callers ask again with
        Draft, which reports the failure as a drafter's."""
        if not asks:
            return []
        try:
            return self.colocated.draft(asks)
        except Exception:
            log.exception("co-located drafting after a verify batch failed")
            return []

    def Draft(self, request: pb.DraftRequest) -> pb.DraftResponse:
        tokens = self._sequence(request, "draft")
        asks = asks_from_proto(request.asks)
        self.colocated.check([name for name, _ in asks] + list(request.agreement))
        with self.forward_lock:
            found = self._session_for(request.session_id, request.offset, tokens)
            if isinstance(found, pb.StateMiss):
                return pb.DraftResponse(miss=found)
            session, root = found[0], tokens[-1]
            try:
                trees = self.colocated.draft([(session, root, name, settings) for name, settings in asks])
                agreement = {name: self.colocated.drafter(session, name, root).prompt_agreement()
                             for name in request.agreement}
            except Exception as e:
                log.exception("co-located drafting failed")
                return pb.DraftResponse(drafted=pb.Drafted(error=f"{type(e).__name__}: {e}"))
        return pb.DraftResponse(drafted=pb.Drafted(trees=_named([name for name, _ in asks], trees),
                                                   agreement=agreement))

    def Features(self, request: pb.FeaturesRequest) -> pb.FeaturesResponse:
        ids = list(request.token_ids)
        self._check_ids(ids, "token_ids")
        if not 0 <= request.start < len(ids):
            raise ValueError(f"start {request.start} lies outside the {len(ids)} tokens")
        features, _ = TargetVerifier(self.target).prefill(ids)
        return pb.FeaturesResponse(features=to_proto(features[request.start:]))

    def Release(self, request: pb.ReleaseRequest) -> pb.ReleaseResponse:
        with self.forward_lock:
            return pb.ReleaseResponse(released=self.sessions.pop(request.session_id) is not None)
