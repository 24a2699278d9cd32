"""The router deployment: the public gRPC API (Generate, GenerateStream, ListDrafters, grpc.health.v1 Check).

The work of a request is RouterCore's (services/generation.py); this is the Ray Serve ingress around it. Its gRPC
methods are async so that a cancelled call stops decoding at the next step boundary and frees the request's
sessions (Ray Serve runs a sync method or generator to its end in a thread even after the call is cancelled); each
step runs in a worker thread, where blocking handle calls are allowed.

Deadlines, as far as Ray Serve 2.60 allows: the proxy does not pass a client's gRPC deadline to the replica, but
when it expires gRPC answers DEADLINE_EXCEEDED to the client and the proxy cancels the replica's call, which stops
the request as above. `router.request_timeout_s` sets the proxy's own timeout for every request (same outcome).
Each remote call also has a timeout (`drafter_timeout_s`: the drafter is dropped; `verifier_timeout_s`: the
request ends UNAVAILABLE).

API keys (services/auth.py), when configured, are checked first on every call but the health check.

Health: the router answers `grpc.health.v1.Health/Check` (its servicer is registered with the gRPC proxy) with
SERVING while the verifier answers; `Watch` is not implemented. Ray Serve's own
`/ray.serve.RayServeAPIService/Healthz` reports the proxy's health.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from contextlib import aclosing
from typing import Any, AsyncIterator, Iterator

import grpc
from grpc_health.v1 import health_pb2
from ray import serve

from taps_engine.policies import POLICIES
from taps_engine.target import load_prompt_format

from .assignments import make_assignment_cache
from .config import ServeConfig
from .deployments import VERIFIER_APP, drafter_app_name
from .generation import RouterCore
from .grpc_transport import GrpcHandle
from .logs import configure_logging
from .prometheus import RouterMetrics
from .protos_gen.taps.v1 import taps_pb2 as pb
from .results import response_from_chunks
from .validation import RequestError

HEALTH_SERVICES = ("", "taps.v1.Router")  # names grpc.health.v1 clients may ask about
_DONE = object()


@serve.deployment(name="Router")
class Router:
    """The gRPC ingress. Methods take the parsed request and the RayServegRPCContext, as Ray Serve's proxy calls
    them; status codes are set on the context."""

    def __init__(self, config: dict) -> None:
        serve_config = ServeConfig.model_validate(config)
        configure_logging(serve_config.log_level)
        router = serve_config.router
        drafters, verifier = service_handles(serve_config)
        cache = make_assignment_cache(router.redis(), router.assignment_ttl_s, router.assignment_cache_size)
        self.core = RouterCore(serve_config, load_prompt_format(serve_config.target), drafters, verifier, cache,
                               RouterMetrics())
        # one thread per request in flight: decoding steps block on remote calls
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=router.deployment.max_ongoing_requests or 32,
                                                          thread_name_prefix="taps-step")

    async def _steps(self, request: pb.GenerateRequest) -> AsyncIterator[pb.GenerateChunk]:
        """RouterCore.chunks, one step at a time in the pool. When the caller stops early (a cancelled call), the
        step in flight finishes in its thread and the generator is then closed there, releasing the sessions."""
        chunks = self.core.chunks(request)
        step: concurrent.futures.Future | None = None
        try:
            while True:
                step = self.pool.submit(next, chunks, _DONE)
                chunk = await asyncio.wrap_future(step)
                if chunk is _DONE:
                    return
                yield chunk
        finally:
            self.pool.submit(_close_after, step, chunks)

    def _refuse(self, error: RequestError, request: pb.GenerateRequest, grpc_context) -> None:
        policy = request.policy or self.core.config.router.default_policy
        self.core.metrics.failed(policy if policy in POLICIES else "unknown", error.code.name.lower())
        grpc_context.set_code(error.code)
        grpc_context.set_details(error.message)

    async def Generate(self, request: pb.GenerateRequest, grpc_context) -> pb.GenerateResponse:
        try:
            self.core.authorize(grpc_context.invocation_metadata())
            async with aclosing(self._steps(request)) as steps:
                return response_from_chunks([chunk async for chunk in steps])
        except RequestError as e:
            self._refuse(e, request, grpc_context)
            return pb.GenerateResponse()

    async def GenerateStream(self, request: pb.GenerateRequest, grpc_context) -> AsyncIterator[pb.GenerateChunk]:
        try:
            self.core.authorize(grpc_context.invocation_metadata())
            async with aclosing(self._steps(request)) as steps:
                async for chunk in steps:
                    yield chunk
        except RequestError as e:
            # once a stream is open, only an exception carries a status; the code set here is the one sent. The
            # proxy unpickles the exception: a builtin type spares it importing this package (and torch) first
            self._refuse(e, request, grpc_context)
            raise RuntimeError(f"{e.code.name}: {e.message}") from None

    async def ListDrafters(self, request: pb.ListDraftersRequest, grpc_context) -> pb.ListDraftersResponse:
        try:
            self.core.authorize(grpc_context.invocation_metadata())
        except RequestError as e:
            grpc_context.set_code(e.code)
            grpc_context.set_details(e.message)
            return pb.ListDraftersResponse()
        return self.core.list_drafters()

    async def Check(self, request: health_pb2.HealthCheckRequest, grpc_context) -> health_pb2.HealthCheckResponse:
        if request.service not in HEALTH_SERVICES:
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {request.service!r}")
            return health_pb2.HealthCheckResponse()
        status = await asyncio.get_running_loop().run_in_executor(self.pool, self.core.health)
        return health_pb2.HealthCheckResponse(status=status)


def service_handles(config: ServeConfig) -> tuple[dict[str, Any], Any]:
    """How this router reaches each drafter and the verifier: a drafter with an `address` over gRPC there, the
    others over the configured transport (Ray handles, or gRPC through this node's proxy)."""
    limit = config.router.max_message_bytes
    local = f"127.0.0.1:{config.router.grpc_port}"

    def handle(service: str, application: str, address: str | None = None) -> Any:
        if address is not None or config.router.transport == "grpc":
            return GrpcHandle(address or local, service, application, limit)
        return serve.get_deployment_handle(service, application)

    verifier = handle("Verifier", VERIFIER_APP)
    # a co-located drafter answers through the verifier (its health is the verifier's)
    drafters = {name: verifier if d.colocated else handle("Drafter", d.application or drafter_app_name(name), d.address)
                for name, d in config.drafters.items()}
    return drafters, verifier


def _close_after(step: concurrent.futures.Future | None, chunks: Iterator) -> None:
    if step is not None:
        concurrent.futures.wait([step])
    chunks.close()


def build_router(args: dict, options: dict | None = None) -> serve.Application:
    """`import_path: services.router:build_router`; args: {"config": a ServeConfig as JSON}."""
    return Router.options(**(options or {})).bind(args["config"])
