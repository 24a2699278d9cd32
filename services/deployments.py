"""Ray Serve deployments for the drafter and verifier servers: protobuf bytes in, protobuf bytes out.

The servers (services/drafter_server.py, services/verifier_server.py) hold the logic; these wrappers only parse
and serialize, so the same messages that the protocol defines are what crosses the Ray object store. Methods are
sync: Ray Serve runs them in a thread pool, so one replica serves several sessions at once.

Application builders (`import_path` in a Serve config) take the servers' constructor arguments as `args`.
"""

from __future__ import annotations

from typing import Callable

import grpc
import torch
from google.protobuf.message import Message
from ray import serve

from .drafter_server import DrafterServer
from .logs import configure_logging
from .protos_gen.taps.v1 import taps_pb2 as pb
from .verifier_server import VerifierServer

VERIFIER_APP = "verifier"
ROUTER_APP = "router"


def drafter_app_name(name: str) -> str:
    return f"drafter-{name}"


def configure_replica(log_level: str, torch_threads: int | None) -> None:
    configure_logging(log_level)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)


def _rpc(name: str, request_type: type, response_type: type) -> Callable[..., object]:
    """A deployment method for the server's method `name`, for both transports: serialized `request_type` bytes
    in and out from a deployment handle (the router's `handle` transport), or the parsed message in and out from
    Ray Serve's gRPC proxy, which passes `grpc_context`. Over gRPC, a request the server refuses (ValueError) is
    INVALID_ARGUMENT with the server's message, as the router answers its own callers."""
    def method(self, data: bytes | Message, grpc_context=None) -> bytes | Message:
        if isinstance(data, bytes):
            return getattr(self.server, name)(request_type.FromString(data)).SerializeToString()
        try:
            return getattr(self.server, name)(data)
        except ValueError as e:
            grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
            grpc_context.set_details(str(e))
            return response_type()
    method.__name__ = name
    return method


@serve.deployment(name="Drafter")
class DrafterDeployment:
    def __init__(self, name: str, head_path: str | None, target: str, dtype: str = "auto", cache_size: int = 64,
                 max_batch_size: int = 8, batch_wait_s: float = 0.002, method: str = "eagle2",
                 torch_threads: int | None = None, log_level: str = "warning") -> None:
        configure_replica(log_level, torch_threads)
        self.server = DrafterServer(name, head_path, target, dtype, cache_size, method, max_batch_size, batch_wait_s)

    Info = _rpc("Info", pb.InfoRequest, pb.DrafterInfo)
    Propose = _rpc("Propose", pb.ProposeRequest, pb.ProposeResponse)
    PromptAgreement = _rpc("PromptAgreement", pb.PromptAgreementRequest, pb.PromptAgreementResponse)
    Release = _rpc("Release", pb.ReleaseRequest, pb.ReleaseResponse)


@serve.deployment(name="Verifier")
class VerifierDeployment:
    def __init__(self, target: str, dtype: str = "auto", cache_size: int = 32, max_batch_size: int = 8,
                 batch_wait_s: float = 0.002, drafters: dict[str, str | None] | None = None,
                 torch_threads: int | None = None, log_level: str = "warning") -> None:
        configure_replica(log_level, torch_threads)
        self.server = VerifierServer(target, dtype, cache_size, max_batch_size, batch_wait_s, drafters)

    Info = _rpc("Info", pb.InfoRequest, pb.VerifierInfo)
    Prefill = _rpc("Prefill", pb.PrefillRequest, pb.PrefillResponse)
    Verify = _rpc("Verify", pb.VerifyRequest, pb.VerifyResponse)
    Draft = _rpc("Draft", pb.DraftRequest, pb.DraftResponse)
    Features = _rpc("Features", pb.FeaturesRequest, pb.FeaturesResponse)
    Release = _rpc("Release", pb.ReleaseRequest, pb.ReleaseResponse)


def build_drafter(args: dict, options: dict | None = None) -> serve.Application:
    """`import_path: services.deployments:build_drafter`; args: name, head_path, target, dtype, cache_size,
    max_batch_size, batch_wait_s, method, torch_threads, log_level.
    `options` (deployment options) is for direct use; a Serve config sets them in its `deployments` section."""
    return DrafterDeployment.options(**(options or {})).bind(**args)


def build_verifier(args: dict, options: dict | None = None) -> serve.Application:
    """`import_path: services.deployments:build_verifier`; args: target, dtype, cache_size, max_batch_size,
    batch_wait_s, drafters (co-located: name -> head directory or None), torch_threads, log_level."""
    return VerifierDeployment.options(**(options or {})).bind(**args)
