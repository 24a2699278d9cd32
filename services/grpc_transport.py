"""The router's `grpc` transport: drafter and verifier services reached over gRPC instead of Ray handles.

`GrpcHandle` offers what services/remote.py uses of a Ray DeploymentHandle (`options(method_name=...,
session_id=...).remote(bytes)`, a response with `result(timeout_s)` and `cancel()`), so the remote proposer and
verifier, their failure semantics (timeouts, a dropped drafter, a session rebuilt after a miss) and the decoding
loop are the same for both transports. Each call names its application (Ray Serve's gRPC proxy routes by the
`application` metadata) and its session (`session_id` metadata, which the proxy hands to the session-affinity
request router, as a handle call does). Messages are the protos' serialized bytes, passed through unparsed.
"""

from __future__ import annotations

import threading

import grpc

_CHANNELS: dict[tuple[str, int], grpc.Channel] = {}
_LOCK = threading.Lock()


def channel(address: str, max_message_bytes: int) -> grpc.Channel:
    """One channel per address and limit in this process: calls of every request share its connection."""
    with _LOCK:
        key = (address, max_message_bytes)
        if key not in _CHANNELS:
            _CHANNELS[key] = grpc.insecure_channel(address, options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes)])
        return _CHANNELS[key]


class _Response:
    def __init__(self, future: grpc.Future) -> None:
        self.future = future

    def result(self, timeout_s: float | None = None) -> bytes:
        try:
            return self.future.result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TimeoutError(f"no answer within {timeout_s} s") from None

    def cancel(self) -> None:
        self.future.cancel()


class GrpcHandle:
    """Calls to one TAPS `Drafter` or `Verifier` service (`service`) of one application at `address`."""

    def __init__(self, address: str, service: str, application: str, max_message_bytes: int,
                 method: str | None = None, session_id: str = "") -> None:
        self.address, self.service, self.application = address, service, application
        self.max_message_bytes = max_message_bytes
        self.method, self.session_id = method, session_id

    def options(self, method_name: str | None = None, session_id: str | None = None, **_) -> "GrpcHandle":
        return GrpcHandle(self.address, self.service, self.application, self.max_message_bytes,
                          method_name or self.method, self.session_id if session_id is None else session_id)

    def remote(self, data: bytes) -> _Response:
        call = channel(self.address, self.max_message_bytes).unary_unary(f"/taps.v1.{self.service}/{self.method}")
        metadata = [("application", self.application)] + ([("session_id", self.session_id)] if self.session_id else [])
        return _Response(call.future(data, metadata=metadata))
