"""Session affinity for drafter and verifier replicas: a Ray Serve request router keyed by session id.

Replicas keep each session's KV state, so sending a session's calls to the replica that holds it saves a
rebuild (a re-prefill on the verifier, a resend of the pair history to a drafter) on every step. The router
calls with `handle.options(session_id=...)`; this request router ranks the replicas by rendezvous hashing of
(session id, replica id): the top replica is tried first, then two others, so a busy or lost replica costs only a
rebuild, never a failure. Calls without a session id (Info, health checks) go to two random replicas, the less
loaded winning, like Ray Serve's default router.

Rendezvous hashing keeps most sessions in place when replicas come and go (autoscaling): only the sessions of
the replica that left, or those a new replica now ranks first, move.

It matches every routed replica to exactly the request it was chosen for (RequestRouter's default behaviour,
unlike the FIFO mixin, which may hand a replica chosen for one session to another request).
"""

from __future__ import annotations

import hashlib
import random
from typing import List, Optional

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica


def _rank(session_id: str, replica: RunningReplica) -> bytes:
    return hashlib.blake2b(f"{session_id}/{replica.replica_id.unique_id}".encode(), digest_size=8).digest()


class SessionAffinityRouter(RequestRouter):
    async def choose_replicas(self, candidate_replicas: List[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> List[List[RunningReplica]]:
        if not candidate_replicas:
            return []
        session_id = pending_request.metadata.session_id if pending_request is not None else ""
        if not session_id:
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        ranked = sorted(candidate_replicas, key=lambda r: _rank(session_id, r))
        others = ranked[1:]
        return [ranked[:1], random.sample(others, min(2, len(others)))] if others else [ranked[:1]]
