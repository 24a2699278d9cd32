"""The target behind the internal `Verifier` protocol: per-session KV caches, verification and acceptance.

Each generation request is one session: a `TargetVerifier` (taps_engine.verifier) holding the KV cache of every
committed token except the pending root, kept in a bounded LRU (the replica's memory bound). `Verify` carries only
the committed tokens from an offset on (the session protocol of protos/taps/v1/taps.proto): a replica that holds
fewer tokens (after a restart, an eviction, or when the request was routed to another replica) answers `StateMiss`,
and when the caller resends from there it forwards the missing suffix before verifying. Acceptance runs here, with
the caller's generator state, so only the accepted rows' features travel back and sampled output matches the
in-process engine.

This class speaks protobuf messages and knows nothing of Ray; services/deployments.py wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import logging

import torch

from taps_engine.acceptance import SamplingParams
from taps_engine.target import load_target
from taps_engine.tree import DraftTree
from taps_engine.verifier import TargetVerifier

from .protos_gen.taps.v1 import taps_pb2 as pb
from .sessions import SessionCache
from .codec import NAMES, to_proto, tree_from_proto

log = logging.getLogger(__name__)


@dataclass
class VerifierSession:
    verifier: TargetVerifier
    ids: list[int]  # the tokens whose keys and values the cache holds


def _chain(tokens: list[int]) -> DraftTree:
    """A single-path tree: verifying it after its root forwards the tokens causally (a cache catch-up)."""
    n = len(tokens)
    return DraftTree(tokens=torch.tensor(tokens, dtype=torch.long), parents=torch.arange(n) - 1,
                     depths=torch.arange(1, n + 1), scores=torch.zeros(n), entropies=torch.zeros(n),
                     sources=torch.zeros(n, dtype=torch.long))


class VerifierServer:
    def __init__(self, target_spec: str, dtype: str = "auto", cache_size: int = 32) -> None:
        self.target = load_target(target_spec, dtype=dtype)
        self.sessions: SessionCache[VerifierSession] = SessionCache(cache_size)
        shape = self.target.format
        self.info = pb.VerifierInfo(target=target_spec, vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
                                    max_position_embeddings=shape.context_length or 0,
                                    eos_token_ids=sorted(shape.eos_token_ids),
                                    dtype=NAMES[self.target.dtype])
        log.info("verifier ready: %s, %s on %s, up to %d sessions", target_spec, self.info.dtype, self.target.device,
                 cache_size)

    def Info(self, request: pb.InfoRequest) -> pb.VerifierInfo:
        info = pb.VerifierInfo()
        info.CopyFrom(self.info)
        info.sessions = len(self.sessions)
        return info

    def _check_ids(self, ids: list[int], what: str) -> None:
        if not ids:
            raise ValueError(f"{what} is empty")
        vocab = self.target.config.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"{what} holds token ids outside [0, {vocab})")

    def _prefilled(self, ids: list[int]) -> tuple[VerifierSession, torch.Tensor, torch.Tensor]:
        verifier = TargetVerifier(self.target)
        features, logits = verifier.prefill(ids)
        return VerifierSession(verifier, list(ids)), features, logits

    def Prefill(self, request: pb.PrefillRequest) -> pb.PrefillResponse:
        ids = list(request.prompt_ids)
        self._check_ids(ids, "prompt_ids")
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
        found = self._session_for(request.session_id, request.offset, tokens)
        if isinstance(found, pb.StateMiss):
            return pb.VerifyResponse(miss=found)
        session, caught_up = found
        generator = torch.Generator()
        if request.accept.rng_state:
            generator.set_state(torch.frombuffer(bytearray(request.accept.rng_state), dtype=torch.uint8))
        path, bonus, features = session.verifier.step(tokens[-1], tree, params, generator)
        session.ids += [tokens[-1]] + tree.tokens[path].tolist()
        return pb.VerifyResponse(verified=pb.Verified(
            features=to_proto(features), path=path, bonus_token=bonus,
            rng_state=generator.get_state().numpy().tobytes(), caught_up=caught_up))

    def Features(self, request: pb.FeaturesRequest) -> pb.FeaturesResponse:
        ids = list(request.token_ids)
        self._check_ids(ids, "token_ids")
        if not 0 <= request.start < len(ids):
            raise ValueError(f"start {request.start} lies outside the {len(ids)} tokens")
        features, _ = TargetVerifier(self.target).prefill(ids)
        return pb.FeaturesResponse(features=to_proto(features[request.start:]))

    def Release(self, request: pb.ReleaseRequest) -> pb.ReleaseResponse:
        return pb.ReleaseResponse(released=self.sessions.pop(request.session_id) is not None)
