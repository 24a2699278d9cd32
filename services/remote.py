"""The engine's Proposer and Verifier interfaces over Ray Serve deployment handles.

The router runs the engine's decoding loop (taps_engine.decoding) unchanged; these classes make each drafter and
the verifier a remote deployment. Requests and responses are serialized protobuf bytes (protos/taps/v1), sent
through DeploymentHandles rather than gRPC: Ray moves large payloads (a long prompt's features) through its object
store, with no 4 MB message limit.

Failure semantics follow what the loop can survive: a drafter that fails (application deleted, replica dead,
timeout, lost state that cannot be restored) raises `DrafterUnavailable`, and the loop carries on without it; the
verifier is indispensable, so its failure raises `VerifierUnavailable`, which the router reports as UNAVAILABLE.
Every call names its session (`session_id`), which the session-affinity request router (services/affinity.py)
uses to keep a session on the replica that holds its state. A drafter co-located in the verifier's replica
(`ColocatedProposer`) rides on the verifier's calls: one round trip per step for both.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable, Sequence, TypeVar

import torch
from google.protobuf.message import Message

from taps_engine.acceptance import SamplingParams
from taps_engine.drafter import DrafterUnavailable
from taps_engine.tree import DraftTree, TreeSettings

from .breaker import Breaker
from .protos_gen.taps.v1 import taps_pb2 as pb
from .codec import asks_to_proto, from_proto, settings_to_proto, to_proto, tree_from_proto, tree_to_proto

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

# Resends after StateMiss answers before a drafter counts as unavailable: the first miss is normal (a restarted or
# evicting replica); more mean the session keeps landing on replicas without its state.
MAX_RESENDS = 2


VERIFIER = "verifier"


def drafter_key(name: str) -> str:
    """A drafter's name in the breaker (drafter names are the operator's; this keeps them apart from the verifier)."""
    return f"drafter {name}"


class VerifierUnavailable(RuntimeError):
    """The verifier deployment failed: the request cannot complete (gRPC UNAVAILABLE)."""


class CostsUnmeasured(RuntimeError):
    """The verifier answered but could not measure its verify cost curve: it still verifies."""


def call(handle: Any, method: str, request: Message, response_type: type[M], session_id: str,
         timeout_s: float) -> M:
    """One round trip: serialized request in, parsed response out.

    A failure other than a timeout is retried once: Ray Serve routes the retry to a live replica, and every
    internal call is idempotent or rebuilds state from the request. A timeout is not retried (the replica may
    still be working on it); the response is cancelled instead.
    """
    data = request.SerializeToString()
    target = handle.options(method_name=method, session_id=session_id)

    def once() -> M:
        response = target.remote(data)
        try:
            return response_type.FromString(response.result(timeout_s=timeout_s))
        except TimeoutError:
            response.cancel()
            raise

    try:
        return once()
    except TimeoutError:
        raise
    except Exception as e:  # any replica or routing failure
        log.warning("%s %s failed (%s: %s); retrying once", method, session_id, type(e).__name__, e)
        return once()


class RemoteProposer:
    """A drafter deployment seen as a Proposer, for one generation request (one session).

    Sends only the pairs the replica has not acknowledged, and keeps only those: token ids are kept whole (they
    are cheap), feature rows until the replica acknowledges them. A replica that lost the session asks for older
    pairs; their features come back from `refetch(start, end)` (the verifier recomputes them from the tokens).
    """

    concurrent = True  # waits on the network, not the CPU: multi-drafter policies draft these in parallel

    def __init__(self, name: str, handle: Any, session_id: str, timeout_s: float,
                 refetch: Callable[[int, int], torch.Tensor], breaker: Breaker, served_as: str | None = None) -> None:
        """`served_as`: the name the replica serves under, which it checks on every call ("": not checked, for a
        drafter served elsewhere under a name of its own); default `name`."""
        self.name = name
        self.served_as = name if served_as is None else served_as
        self.handle = handle
        self.session_id = session_id
        self.timeout_s = timeout_s
        self.refetch = refetch
        self.breaker = breaker
        self.failed = False  # raised DrafterUnavailable: the loop dropped it, nothing left to release
        self.reset()

    def reset(self) -> None:
        self.tokens: list[int] = []
        self.pending: list[tuple[int, torch.Tensor]] = []  # (first pair index, feature rows) not yet acknowledged
        self.acked = 0                                     # pairs the replica has acknowledged
        self.resends = 0                                   # StateMiss answers (metrics)

    def extend(self, tokens: Sequence[int], features: torch.Tensor) -> None:
        if len(tokens) != features.shape[0]:
            raise ValueError(f"{len(tokens)} tokens but {features.shape[0]} features")
        self.pending.append((len(self.tokens), features.detach().cpu()))
        self.tokens.extend(int(t) for t in tokens)

    def _features(self, offset: int) -> torch.Tensor | None:
        """Feature rows of pairs `offset` on: refetched below what is still held, then the held ones."""
        held_from = self.pending[0][0] if self.pending else len(self.tokens)
        rows = [self.refetch(offset, held_from)] if offset < held_from else []
        rows += [chunk[max(0, offset - start):] for start, chunk in self.pending if start + chunk.shape[0] > offset]
        return torch.cat(rows) if rows else None

    def _update(self, offset: int) -> pb.PairUpdate:
        features = self._features(offset)
        return pb.PairUpdate(session_id=self.session_id, drafter=self.served_as, offset=offset,
                             tokens=self.tokens[offset:], features=to_proto(features) if features is not None else None)

    def recovered(self) -> bool:
        return self.failed and self.breaker.up(drafter_key(self.name))

    def rejoin(self, tokens: Sequence[int]) -> None:
        """Back after a failure: the replica is sent the whole history again, features recomputed by `refetch`."""
        self.reset()
        self.tokens = [int(t) for t in tokens]
        self.failed = False

    def _drop(self, failure: DrafterUnavailable) -> DrafterUnavailable:
        """This request drops the drafter, and every request skips it until it answers a probe again."""
        self.failed = True
        self.breaker.failed(drafter_key(self.name), str(failure))
        return failure

    def _exchange(self, method: str, build, response_type: type[M]) -> M:
        """A call, unless the drafter is known to be down (then it fails at once)."""
        if not self.breaker.up(drafter_key(self.name)):
            self.failed = True
            raise DrafterUnavailable(self.name, "marked unavailable after a failure; waiting for it to answer")
        try:
            return self._resending(method, build, response_type)
        except DrafterUnavailable as e:
            raise self._drop(e)

    def _resending(self, method: str, build, response_type: type[M]) -> M:
        """Send the unacknowledged pairs with the request `build(update)`; resend from where a replica asks."""
        offset = self.acked
        for _ in range(1 + MAX_RESENDS):
            try:
                response = call(self.handle, method, build(self._update(offset)), response_type, self.session_id,
                                self.timeout_s)
            except Exception as e:  # whatever failed, the loop continues without this drafter
                raise DrafterUnavailable(self.name, f"{method} failed: {type(e).__name__}: {e}") from e
            if response.WhichOneof("result") != "miss":
                self.acked, self.pending = len(self.tokens), []
                return response
            self.resends += 1
            offset = response.miss.resend_from
            if not 0 <= offset <= len(self.tokens):
                raise DrafterUnavailable(self.name, f"replica asked to resend from {offset}, outside the history")
        raise DrafterUnavailable(self.name, f"session state lost {1 + MAX_RESENDS} times in a row")

    def propose(self, settings: TreeSettings) -> DraftTree:
        response = self._exchange("Propose", lambda u: pb.ProposeRequest(update=u, tree=settings_to_proto(settings)),
                                  pb.ProposeResponse)
        try:
            return tree_from_proto(response.tree)
        except ValueError as e:
            raise self._drop(DrafterUnavailable(self.name, f"malformed draft tree: {e}")) from e

    def prompt_agreement(self) -> float:
        return self._exchange("PromptAgreement", lambda u: pb.PromptAgreementRequest(update=u),
                              pb.PromptAgreementResponse).agreement


class RemoteVerifier:
    """The verifier deployment seen as a Verifier, for one generation request (one session).

    Keeps the committed token ids (cheap) and sends each step only those the replica has not acknowledged:
    normally one token, the new root.
    """

    def __init__(self, handle: Any, session_id: str, timeout_s: float, breaker: Breaker) -> None:
        self.handle = handle
        self.session_id = session_id
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.ids: list[int] = []      # committed tokens before the pending root: what the replica's cache holds
        self.acked = 0                # of those, the ones the replica has acknowledged
        self.rebuilds = 0             # StateMiss answers (metrics)
        self.colocated: dict[str, ColocatedProposer] = {}   # drafters in the replica, registered by themselves

    def _call(self, method: str, request: Message, response_type: type[M]) -> M:
        """A call; when it fails, the verifier is marked down for new requests and this one waits (up to
        `timeout_s`) for a replica to answer again, then retries once. Lost session state is then rebuilt through
        the StateMiss protocol, as after any restart."""
        try:
            return call(self.handle, method, request, response_type, self.session_id, self.timeout_s)
        except Exception as e:
            failure = VerifierUnavailable(f"verifier {method} failed: {type(e).__name__}: {e}")
            self.breaker.failed(VERIFIER, str(failure))
            if not self.breaker.wait_up(VERIFIER, self.timeout_s):
                raise failure from e
        try:
            return call(self.handle, method, request, response_type, self.session_id, self.timeout_s)
        except Exception as e:
            raise VerifierUnavailable(f"verifier {method} failed after it came back: {type(e).__name__}: {e}") from e

    def prefill(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        response = self._call("Prefill", pb.PrefillRequest(session_id=self.session_id, prompt_ids=list(ids)),
                              pb.PrefillResponse)
        self.ids, self.acked = list(ids), len(ids)
        return from_proto(response.features), from_proto(response.logits)

    def _sessioned(self, method: str, build: Callable[[int], Message], response_type: type[M]) -> M:
        """A call carrying the committed tokens from the replica's acknowledged offset on (`build(offset)`),
        resent from where a replica that lost the session asks."""
        offset = self.acked
        for _ in range(1 + MAX_RESENDS):
            response = self._call(method, build(offset), response_type)
            if response.WhichOneof("result") != "miss":
                return response
            self.rebuilds += 1
            offset = response.miss.resend_from
            if not 0 <= offset <= len(self.ids):
                raise VerifierUnavailable(f"verifier asked to resend from {offset}, outside the sequence")
        raise VerifierUnavailable(f"verifier lost the session {1 + MAX_RESENDS} times in a row")

    def step(self, root: int, tree: DraftTree, params: SamplingParams,
             generator: torch.Generator) -> tuple[list[int], int, torch.Tensor]:
        sampling = pb.SamplingParams(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        accept = pb.Acceptance(sampling=sampling,
                               rng_state=b"" if params.greedy else generator.get_state().numpy().tobytes())
        encoded = tree_to_proto(tree)
        asking = [p for p in self.colocated.values() if p.wanted is not None]
        draft_next = asks_to_proto((p.name, p.wanted) for p in asking)
        verified = self._sessioned("Verify", lambda offset: pb.VerifyRequest(
            session_id=self.session_id, offset=offset, tokens=self.ids[offset:] + [int(root)], tree=encoded,
            accept=accept, draft_next=draft_next), pb.VerifyResponse).verified
        path = list(verified.path)
        if any(not 0 <= i < len(tree) for i in path):
            raise VerifierUnavailable(f"verifier returned path {path} outside a tree of {len(tree)} nodes")
        if verified.rng_state and not params.greedy:
            generator.set_state(torch.frombuffer(bytearray(verified.rng_state), dtype=torch.uint8))
        self.ids += [int(root)] + tree.tokens[path].tolist()
        self.acked = len(self.ids)
        trees = by_drafter(verified.next_trees)
        for proposer in asking:
            proposer.prefetched(trees.get(proposer.name))
        return path, int(verified.bonus_token), from_proto(verified.features)

    def draft(self, root: int, asks: Sequence[tuple[str, TreeSettings]] = (),
              agreement: Sequence[str] = ()) -> pb.Drafted:
        """Co-located drafters' trees (and prompt agreements) for the committed tokens and `root`, in one call."""
        return self._sessioned("Draft", lambda offset: pb.DraftRequest(
            session_id=self.session_id, offset=offset, tokens=self.ids[offset:] + [int(root)],
            asks=asks_to_proto(asks),
            agreement=list(agreement)), pb.DraftResponse).drafted

    def verify_costs(self) -> dict[int, float]:
        """The replica's verify cost curve (ms per verification of n tokens), for cost-aware trees."""
        info = self._call("Info", pb.InfoRequest(verify_costs=True), pb.VerifierInfo)
        if not info.verify_ms:
            raise CostsUnmeasured(info.verify_costs_error or "the verifier answered without its verify cost curve")
        return dict(info.verify_ms)

    def features(self, start: int, end: int) -> torch.Tensor:
        """Target features of committed positions [start, end), recomputed by a replica (drafter rebuilds)."""
        response = self._call("Features", pb.FeaturesRequest(token_ids=self.ids[:end], start=start),
                              pb.FeaturesResponse)
        return from_proto(response.features)


def by_drafter(trees: Sequence[pb.NamedTree]) -> dict[str, pb.DraftTree]:
    return {named.drafter: named.tree for named in trees}


class ColocatedProposer:
    """A drafter co-located in the verifier's replica (config `colocated: true`), seen as a Proposer.

    Its tree for the next step comes back with the verifier's answer to this step (`draft_next`), so a step costs
    one round trip; the replica appends the pairs itself, so `extend` sends nothing. An explicit Draft call is
    made only when no tree came back for the settings asked: the first step, new settings, a failed draft. The
    replica's session holds this drafter's state, so releasing the verifier's session releases it too.
    """

    concurrent = False   # its calls are the verifier's: nothing to overlap

    def __init__(self, name: str, verifier: RemoteVerifier) -> None:
        self.name = name
        self.verifier = verifier
        verifier.colocated[name] = self
        self.reset()

    def reset(self) -> None:
        self.root: int | None = None                 # the pending root: the last pair's token
        self.wanted: TreeSettings | None = None      # settings of the last tree proposed: asked for again next step
        self._next: tuple[TreeSettings, pb.DraftTree] | None = None

    def extend(self, tokens: Sequence[int], features: torch.Tensor) -> None:
        self.root = int(tokens[-1])

    def prefetched(self, tree: pb.DraftTree | None) -> None:
        """The tree the verifier drafted with the step it just verified (None: it did not draft it)."""
        self._next = (self.wanted, tree) if tree is not None else None
        self.wanted = None

    def _drafted(self, asks: Sequence[tuple[str, TreeSettings]] = (), agreement: Sequence[str] = ()) -> pb.Drafted:
        drafted = self.verifier.draft(self.root, asks, agreement)
        if drafted.error:
            raise DrafterUnavailable(self.name, f"co-located drafting failed: {drafted.error}")
        return drafted

    def propose(self, settings: TreeSettings) -> DraftTree:
        # a cost-aware tree moves `stop_below` every step (the drafting-stop hint): a tree drafted with the last
        # step's is used, as redrafting would cost the round trip prefetching saves
        if self._next is not None and replace(self._next[0], stop_below=0.0) == replace(settings, stop_below=0.0):
            encoded = self._next[1]
        else:
            encoded = by_drafter(self._drafted([(self.name, settings)]).trees).get(self.name, pb.DraftTree())
        self._next, self.wanted = None, settings
        try:
            return tree_from_proto(encoded)
        except ValueError as e:
            raise DrafterUnavailable(self.name, f"malformed draft tree: {e}") from e

    def prompt_agreement(self) -> float:
        return self._drafted(agreement=[self.name]).agreement[self.name]


def release(sessions: Sequence[RemoteProposer | RemoteVerifier], timeout_s: float) -> None:
    """Free the sessions' replica state, all at once; best effort (an LRU frees whatever this misses)."""
    pending = []
    for session in sessions:
        request = pb.ReleaseRequest(session_id=session.session_id).SerializeToString()
        try:
            pending.append(session.handle.options(method_name="Release", session_id=session.session_id)
                           .remote(request))
        except Exception as e:
            log.info("releasing session %s failed: %s", session.session_id, e)
    for response in pending:
        try:
            response.result(timeout_s=timeout_s)
        except Exception as e:
            log.info("releasing a session failed: %s", e)
