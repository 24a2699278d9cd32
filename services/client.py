"""A small Python client for the TAPS gRPC API (what `taps client` uses).

Plain gRPC: any language's generated stubs for protos/taps/v1/taps.proto work the same way. Calls carry the
metadata `application: router`, which Ray Serve's gRPC proxy uses to pick the application (needed only where a
cluster runs more applications with routes than TAPS's router).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .protos_gen.taps.v1 import taps_pb2 as pb
from .protos_gen.taps.v1 import taps_pb2_grpc

class TapsError(RuntimeError):
    """A failed call: the gRPC status code and the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def request(prompt: str | None = None, *, messages: Sequence[dict] | None = None,
            prompt_token_ids: Sequence[int] | None = None, system: str = "", raw: bool = False, policy: str = "",
            drafter: str = "", max_new_tokens: int | None = None, temperature: float | None = None,
            top_p: float | None = None, top_k: int = 0, seed: int = 0, ignore_eos: bool = False,
            conversation_id: str = "") -> pb.GenerateRequest:
    """A GenerateRequest; unset optional fields take the server's defaults."""
    msg = pb.GenerateRequest(prompt=prompt or "", system=system, raw=raw, policy=policy, drafter=drafter,
                             top_k=top_k, seed=seed, ignore_eos=ignore_eos, conversation_id=conversation_id,
                             prompt_token_ids=list(prompt_token_ids or []),
                             messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in messages or []])
    if max_new_tokens is not None:
        msg.max_new_tokens = max_new_tokens
    if temperature is not None:
        msg.temperature = temperature
    if top_p is not None:
        msg.top_p = top_p
    return msg


class TapsClient:
    def __init__(self, address: str, timeout_s: float | None = None, api_key: str | None = None,
                 application: str = "router") -> None:
        """`api_key` goes with every call as `authorization: Bearer <key>` (servers with `router.api_keys`);
        `application` names the router application on a Ray Serve instance that runs several."""
        self.address = address
        self.timeout_s = timeout_s
        self.metadata = (("application", application),) + \
            ((("authorization", f"Bearer {api_key}"),) if api_key else ())
        self.channel = grpc.insecure_channel(address)
        self.router = taps_pb2_grpc.RouterStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> "TapsClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _timeout(self, timeout_s: float | None) -> float | None:
        return timeout_s if timeout_s is not None else self.timeout_s

    def generate(self, prompt: str | None = None, *, timeout_s: float | None = None, **fields) -> pb.GenerateResponse:
        """One whole answer; `fields` as for `request()`. Raises TapsError."""
        try:
            return self.router.Generate(request(prompt, **fields), metadata=self.metadata,
                                        timeout=self._timeout(timeout_s))
        except grpc.RpcError as e:
            raise TapsError(e.code(), e.details()) from None

    def stream(self, prompt: str | None = None, *, timeout_s: float | None = None,
               **fields) -> Iterator[pb.GenerateChunk]:
        """Chunks as the server commits them; the last one carries finish_reason and stats. Raises TapsError."""
        call = self.router.GenerateStream(request(prompt, **fields), metadata=self.metadata,
                                          timeout=self._timeout(timeout_s))
        try:
            yield from call
        except grpc.RpcError as e:
            raise TapsError(e.code(), e.details()) from None
        finally:
            call.cancel()  # a consumer that stops early frees the server's sessions

    def list_drafters(self, timeout_s: float | None = None) -> pb.ListDraftersResponse:
        try:
            return self.router.ListDrafters(pb.ListDraftersRequest(), metadata=self.metadata,
                                            timeout=self._timeout(timeout_s))
        except grpc.RpcError as e:
            raise TapsError(e.code(), e.details()) from None

    def health(self, service: str = "", timeout_s: float | None = None) -> str:
        """grpc.health.v1 status name: SERVING when the router and its verifier answer."""
        try:
            response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), metadata=self.metadata,
                                              timeout=self._timeout(timeout_s))
        except grpc.RpcError as e:
            raise TapsError(e.code(), e.details()) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
