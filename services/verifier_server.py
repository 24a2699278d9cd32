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
from dataclasses import dataclass

import torch

from taps_engine.acceptance import SamplingParams
from taps_engine.target import load_target
from taps_engine.tree import DraftTree
from taps_engine.slots import SlotCache
from taps_engine.verifier import TargetVerifier, step_batch

from .batching import StepBatcher, skipping_dropped
from .protos_gen.taps.v1 import taps_pb2 as pb
from .sessions import SessionCache
from .codec import NAMES, to_proto, tree_from_proto

log = logging.getLogger(__name__)


@dataclass
class VerifierSession:
    verifier: TargetVerifier
    ids: list[int]  # the tokens whose keys and values the cache holds
    dropped: bool = False  # evicted or released: its slot may belong to another session now


@dataclass
class _Step:
    session: VerifierSession
    root: int
    tree: DraftTree
    params: SamplingParams
    generator: torch.Generator


def _chain(tokens: list[int]) -> DraftTree:
    """A single-path tree: verifying it after its root forwards the tokens causally (a cache catch-up)."""
    n = len(tokens)
    return DraftTree(tokens=torch.tensor(tokens, dtype=torch.long), parents=torch.arange(n) - 1,
                     depths=torch.arange(1, n + 1), scores=torch.zeros(n), entropies=torch.zeros(n),
                     sources=torch.zeros(n, dtype=torch.long))


class VerifierServer:
    def __init__(self, target_spec: str, dtype: str = "auto", cache_size: int = 32, max_batch_size: int = 8,
                 batch_wait_s: float = 0.002) -> None:
        self.target = load_target(target_spec, dtype=dtype)
        self.kv = SlotCache.for_model(self.target.config, max_slots=cache_size)
        self.forward_lock = threading.Lock()   # held by every forward on `kv`, and while sessions come and go
        self.sessions: SessionCache[VerifierSession] = SessionCache(cache_size, on_drop=self._drop)
        self.batcher = StepBatcher(self._steps, max_batch_size, batch_wait_s, self.forward_lock,
                                   peers=lambda: len(self.sessions))
        shape = self.target.format
        self.info = pb.VerifierInfo(target=target_spec, vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
                                    max_position_embeddings=shape.context_length or 0,
                                    eos_token_ids=sorted(shape.eos_token_ids),
                                    dtype=NAMES[self.target.dtype])
        log.info("verifier ready: %s, %s on %s, up to %d sessions, batches of up to %d steps", target_spec,
                 self.info.dtype, self.target.device, cache_size, max_batch_size)

    @staticmethod
    def _drop(session: VerifierSession) -> None:
        session.dropped = True
        session.verifier.release()

    def Info(self, request: pb.InfoRequest) -> pb.VerifierInfo:
        info = pb.VerifierInfo()
        info.CopyFrom(self.info)
        info.sessions = len(self.sessions)
        info.verify_forwards, info.verified_steps = self.batcher.batches, self.batcher.steps
        info.verify_seconds = self.batcher.busy_s
        return info

    def _check_ids(self, ids: list[int], what: str) -> None:
        if not ids:
            raise ValueError(f"{what} is empty")
        vocab = self.target.config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"{what} holds token ids outside [0, {vocab})")

    def _prefilled(self, ids: list[int]) -> tuple[VerifierSession, torch.Tensor, torch.Tensor]:
        self.sessions.make_room()
        verifier = TargetVerifier(self.target, self.kv)
        features, logits = verifier.prefill(ids)
        return VerifierSession(verifier, list(ids)), features, logits

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
        if suffix:
            session.verifier.verify(suffix[0], _chain(suffix[1:]))
            session.verifier.commit(range(len(suffix)))
            session.ids += suffix
        return session, bool(suffix)

    def Verify(self, request: pb.VerifyRequest) -> pb.VerifyResponse:
        tokens = list(request.tokens)
        self._check_ids(tokens, "tokens")
        if request.offset < 0 or (request.offset == 0 and len(tokens) < 2):
            raise ValueError("a verify request from offset 0 must hold the prompt and the root")
        tree = tree_from_proto(request.tree)
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
        outcome = self.batcher.submit(_Step(session, tokens[-1], tree, params, generator))
        if outcome is None:
            return pb.VerifyResponse(miss=pb.StateMiss(resend_from=0, reason="session evicted"))
        path, bonus, features = outcome
        return pb.VerifyResponse(verified=pb.Verified(
            features=to_proto(features), path=path, bonus_token=bonus,
            rng_state=generator.get_state().numpy().tobytes(), caught_up=caught_up))

    def _steps(self, steps: list[_Step]) -> list[tuple[list[int], int, torch.Tensor] | None]:
        """The batcher's work (under `forward_lock`): one forward for the steps of sessions still held; None for
        a session dropped while its step waited."""
        results = skipping_dropped(steps, lambda step: step.session.dropped, lambda held: step_batch(
            [s.session.verifier for s in held], [s.root for s in held], [s.tree for s in held],
            [s.params for s in held], [s.generator for s in held]))
        for step, result in zip(steps, results):
            if result is not None:
                step.session.ids += [step.root] + step.tree.tokens[result[0]].tolist()
        return results

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
