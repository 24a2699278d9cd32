"""The target behind the internal `Verifier` protocol: per-session KV caches, verification and acceptance.

Each generation request is one session: a `TargetVerifier` (taps_engine.verifier) holding the KV cache of every
committed token except the pending root, kept in a bounded LRU (the replica's memory bound). `Verify` carries the
session's whole committed sequence, so a replica whose cache does not hold exactly `context_ids[:-1]` (after a
restart, an eviction, or when the request was routed to another replica) rebuilds it first: a forward over the
missing suffix when it holds a prefix, else a fresh prefill. Acceptance runs here, with the caller's generator
state, so only the accepted rows' features travel back and sampled output matches the in-process engine.

This class speaks protobuf messages and knows nothing of Ray; services/deployments.py wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from taps_engine.acceptance import SamplingParams
from taps_engine.target import load_target
from taps_engine.tree import DraftTree
from taps_engine.verifier import TargetVerifier

from .protos_gen.taps.v1 import taps_pb2 as pb
from .sessions import SessionCache
from .tensors import NAMES, to_proto
from .trees import tree_from_proto


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
        config = self.target.config
        self.info = pb.VerifierInfo(target=target_spec, vocab_size=config.vocab_size,
                                    hidden_size=config.hidden_size,
                                    max_position_embeddings=getattr(config, "max_position_embeddings", 0) or 0,
                                    eos_token_ids=sorted(self.target.eos_token_ids),
                                    dtype=NAMES[self.target.dtype])

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

    def _session_for(self, session_id: str, held: list[int]) -> tuple[VerifierSession, bool]:
        """A session whose cache holds exactly `held`, and whether it had to be rebuilt."""
        session = self.sessions.get(session_id)
        if session is not None and session.ids == held:
            return session, False
        if session is not None and 0 < len(session.ids) < len(held) and held[:len(session.ids)] == session.ids:
            suffix = held[len(session.ids):]
            session.verifier.verify(suffix[0], _chain(suffix[1:]))
            session.verifier.commit(range(len(suffix)))
            session.ids = list(held)
        else:
            session = self._prefilled(held)[0]
        self.sessions.put(session_id, session)
        return session, True

    def Verify(self, request: pb.VerifyRequest) -> pb.VerifyResponse:
        context = list(request.context_ids)
        self._check_ids(context, "context_ids")
        if len(context) < 2:
            raise ValueError("context_ids must hold the prompt and at least one generated token")
        tree = tree_from_proto(request.tree)
        sampling = request.accept.sampling
        params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p or 1.0,
                                top_k=sampling.top_k)
        generator = torch.Generator()
        if request.accept.rng_state:
            generator.set_state(torch.frombuffer(bytearray(request.accept.rng_state), dtype=torch.uint8))
        session, rebuilt = self._session_for(request.session_id, context[:-1])
        path, bonus, features = session.verifier.step(context[-1], tree, params, generator)
        session.ids = context + tree.tokens[path].tolist()
        return pb.VerifyResponse(features=to_proto(features), path=path, bonus_token=bonus,
                                 rng_state=generator.get_state().numpy().tobytes(), rebuilt=rebuilt)

    def Release(self, request: pb.ReleaseRequest) -> pb.ReleaseResponse:
        return pb.ReleaseResponse(released=self.sessions.pop(request.session_id) is not None)
