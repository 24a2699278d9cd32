"""One drafter behind the internal `Drafter` protocol: a draft head, per-session draft state, the offset protocol.

A draft head borrows the target's frozen input embedding and LM head, so a replica loads those two matrices of the
target and nothing else of it (services/embedding_target.py); only the head's own weights differ between drafter
applications. Each generation request is one session: a `Drafter`
(taps_engine.drafter) with its slot of the replica's shared head KV cache, kept in a bounded LRU so a replica
serves many requests at once; concurrent sessions' drafts run together, one head forward per tree level
(services/batching.py).

The router sends only the (feature, token) pairs a session has not consumed yet, with their offset in the
session's history. A replica that cannot apply them (restarted, evicted the session, or never saw it because a
request was routed elsewhere) answers `StateMiss` with the offset it needs, and the router resends from there, so
losing state costs one extra round trip and never a wrong draft.

This class speaks protobuf messages and knows nothing of Ray; services/deployments.py wraps it.
"""

from __future__ import annotations

import logging
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

from taps_engine.drafter import Drafter, propose_batch
from taps_engine.head import DraftHead, load_head
from taps_engine.slots import SlotCache
from taps_engine.tree import DraftTree, TreeSettings

from .batching import StepBatcher, skipping_dropped
from .embedding_target import load_embedding_target
from .protos_gen.taps.v1 import taps_pb2 as pb
from .sessions import SessionCache
from .codec import NAMES, from_proto, settings_from_proto, tree_to_proto

log = logging.getLogger(__name__)


@dataclass
class DrafterSession:
    drafter: Drafter
    pairs: int = 0  # history pairs consumed so far
    dropped: bool = False  # evicted or released: its slot may belong to another session now


@dataclass
class _Draft:
    session: DrafterSession
    settings: TreeSettings


def served_head(name: str, path: str | Path | None, model) -> DraftHead:
    """The head at `path`, or for None a random head (with a warning) seeded by the name, so that every replica
    serving the drafter serves the same one."""
    if path is None:
        log.warning("drafter %r has no checkpoint: serving a random (untrained) head; outputs stay lossless but "
                    "acceptance is poor", name)
        return DraftHead.random(model, seed=zlib.crc32(name.encode())).eval()
    return load_head(path, model)


class DrafterServer:
    def __init__(self, name: str, head_path: str | Path | None, target_spec: str, dtype: str = "auto",
                 cache_size: int = 64, method: str = "eagle2", max_batch_size: int = 8,
                 batch_wait_s: float = 0.002) -> None:
        self.name = name
        self.target = load_embedding_target(target_spec, dtype=dtype)
        self.head = served_head(name, head_path, self.target.model)
        self.info = pb.DrafterInfo(name=name, method=method if head_path is not None else "random",
                                   target=target_spec, hidden_size=self.target.config.hidden_size,
                                   path=str(head_path or ""))
        self.kv = SlotCache(num_layers=1, max_slots=cache_size)
        self.forward_lock = threading.Lock()   # held by every head forward on `kv`, and while sessions come and go
        self.sessions: SessionCache[DrafterSession] = SessionCache(cache_size, on_drop=self._drop)
        self.batcher = StepBatcher(self._drafts, max_batch_size, batch_wait_s, self.forward_lock,
                                   peers=lambda: len(self.sessions))
        log.info("drafter %r ready: %s head %s, draft vocabulary %s, %s on %s", name, self.info.method,
                 head_path or "(random)", "full" if self.head.draft_vocab is None else len(self.head.draft_vocab),
                 NAMES[self.target.dtype], self.target.device)

    def Info(self, request: pb.InfoRequest) -> pb.DrafterInfo:
        info = pb.DrafterInfo()
        info.CopyFrom(self.info)
        info.draft_forwards, info.drafted_steps = self.batcher.batches, self.batcher.steps
        info.draft_seconds = self.batcher.busy_s
        return info

    @staticmethod
    def _drop(session: DrafterSession) -> None:
        session.dropped = True
        session.drafter.release()

    def _apply(self, update: pb.PairUpdate) -> DrafterSession | pb.StateMiss:
        """Append the update's pairs to its session, or say which offset to resend from."""
        if update.drafter and update.drafter != self.name:
            raise ValueError(f"this replica serves drafter {self.name!r}, not {update.drafter!r}")
        tokens = list(update.tokens)
        features = from_proto(update.features, self.target.device) if update.HasField("features") else None
        expected = (len(tokens), self.target.config.hidden_size)
        shape = None if features is None else tuple(features.shape)
        if (tokens or shape is not None) and shape != expected:
            raise ValueError(f"update has {len(tokens)} tokens but features of shape {shape}, expected {expected}")
        if update.offset == 0:  # a (re)start: whatever the replica held for the session is replaced
            self.sessions.pop(update.session_id)
            self.sessions.make_room()
            session = DrafterSession(Drafter(self.name, self.head, self.target, self.kv))
            self.sessions.put(update.session_id, session)
        else:
            session = self.sessions.get(update.session_id)
            if session is None:
                return pb.StateMiss(resend_from=0, reason="no session")
            if session.pairs != update.offset:
                if update.offset < session.pairs:  # a retried request: the engine's Drafter cannot rewind
                    self.sessions.pop(update.session_id)
                    return pb.StateMiss(resend_from=0, reason="offset behind")
                return pb.StateMiss(resend_from=session.pairs, reason="offset ahead")
        if tokens:
            session.drafter.extend(tokens, features)
            session.pairs += len(tokens)
        return session

    def Propose(self, request: pb.ProposeRequest) -> pb.ProposeResponse:
        settings = settings_from_proto(request.tree)
        with self.forward_lock:
            session = self._apply(request.update)
        if isinstance(session, pb.StateMiss):
            return pb.ProposeResponse(miss=session)
        tree = self.batcher.submit(_Draft(session, settings))
        if tree is None:
            return pb.ProposeResponse(miss=pb.StateMiss(resend_from=0, reason="session evicted"))
        return pb.ProposeResponse(tree=tree_to_proto(tree))

    def _drafts(self, drafts: list[_Draft]) -> list[DraftTree | None]:
        """The batcher's work (under `forward_lock`): the trees of sessions still held, drafted together; None
        for a session dropped while its draft waited."""
        return skipping_dropped(drafts, lambda draft: draft.session.dropped, lambda held: propose_batch(
            [d.session.drafter for d in held], [d.settings for d in held]))

    def PromptAgreement(self, request: pb.PromptAgreementRequest) -> pb.PromptAgreementResponse:
        with self.forward_lock:
            session = self._apply(request.update)
            if isinstance(session, pb.StateMiss):
                return pb.PromptAgreementResponse(miss=session)
            return pb.PromptAgreementResponse(agreement=session.drafter.prompt_agreement())

    def Release(self, request: pb.ReleaseRequest) -> pb.ReleaseResponse:
        with self.forward_lock:
            return pb.ReleaseResponse(released=self.sessions.pop(request.session_id) is not None)
