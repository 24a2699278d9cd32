"""The serving system as Ray Serve applications, built from one ServeConfig for every way of running it.

Applications: one per drafter (`drafter-<name>`, except drafters served elsewhere, those with an `address`, and
drafters co-located in the verifier's replica), `verifier`, and `router`. By default only the router has a route:
the gRPC proxy sends every call to it without an `application` metadata key, and the router reaches drafters and
the verifier through deployment handles. With `router.expose_services` (or `router.transport: grpc`) the drafter
and verifier applications get routes and gRPC servicers too, and callers name the application. Each application's
replicas, autoscaling and resources come from the config.

`app_specs` is the single description; `serve_config_dict` renders it as a Ray Serve config (the shape of
`ray.serve.schema.ServeDeploySchema`, used by KubeRay's serveConfigV2 and `serve run`), and `run_local` deploys the
same applications on a local Ray. Over-committing CPUs or GPUs makes Ray Serve wait for resources forever with no
error, so `run_local` checks that the replicas fit before deploying.
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from .auth import load_digests
from .config import DeploymentConfig, ServeConfig
from .deployments import ROUTER_APP, VERIFIER_APP, drafter_app_name

GRPC_SERVICER_FUNCTIONS = [
    "services.protos_gen.taps.v1.taps_pb2_grpc.add_RouterServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
# with `router.expose_services` (or the grpc transport) the drafter and verifier applications answer too
SERVICE_SERVICER_FUNCTIONS = [
    "services.protos_gen.taps.v1.taps_pb2_grpc.add_DrafterServicer_to_server",
    "services.protos_gen.taps.v1.taps_pb2_grpc.add_VerifierServicer_to_server",
]
# the proxy's gRPC message limit (Ray Serve reads it from the environment of the proxy's process)
MESSAGE_SIZE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
# drafter and verifier calls carry a session id; this request router keeps a session on one replica
AFFINITY = {"request_router_class": "services.affinity.SessionAffinityRouter"}
OBJECT_STORE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class AppSpec:
    name: str
    import_path: str              # "module:builder"; the builder takes `args` (and optionally deployment options)
    args: dict
    deployment: str               # the application's one deployment
    config: DeploymentConfig
    affinity: bool                # route by session id (services/affinity.py)
    route_prefix: str | None

    def options(self) -> dict:
        """Deployment options, as `Deployment.options(...)` and a Serve config's `deployments` entries take them."""
        options = self.config.serve_options()
        if self.affinity:
            options["request_router_config"] = dict(AFFINITY)
        return options

    def builder(self) -> Callable[..., Any]:
        module, _, attr = self.import_path.partition(":")
        return getattr(importlib.import_module(module), attr)


def app_specs(config: ServeConfig) -> list[AppSpec]:
    exposed = config.services_exposed
    specs = [AppSpec(drafter_app_name(name), "services.deployments:build_drafter",
                     {"name": name, "head_path": str(d.path) if d.path is not None else None,
                      "target": config.target, "dtype": config.compute_dtype, "cache_size": d.session_cache_size,
                      "max_batch_size": d.max_batch_size, "batch_wait_s": d.batch_wait_s,
                      "torch_threads": d.torch_threads,
                      "method": d.method, "log_level": config.log_level.value},
                     "Drafter", d.deployment, True, f"/{drafter_app_name(name)}" if exposed else None)
             for name, d in config.drafters.items() if d.own_application]
    specs.append(AppSpec(VERIFIER_APP, "services.deployments:build_verifier",
                         {"target": config.target, "dtype": config.compute_dtype,
                          "cache_size": config.verifier.session_cache_size,
                          "max_batch_size": config.verifier.max_batch_size,
                          "batch_wait_s": config.verifier.batch_wait_s,
                          "drafters": {name: str(d.path) if d.path is not None else None
                                       for name, d in config.drafters.items() if d.colocated},
                          "torch_threads": config.verifier.torch_threads, "log_level": config.log_level.value},
                         "Verifier", config.verifier.deployment, True, f"/{VERIFIER_APP}" if exposed else None))
    # the router needs every setting but the other applications' deployments; defaults left out keep it short
    router_config = config.model_dump(mode="json", exclude_defaults=True,
                                      exclude={"drafters": {"__all__": {"deployment"}}, "verifier": {"deployment"}})
    specs.append(AppSpec(ROUTER_APP, "services.router:build_router", {"config": router_config},
                         "Router", config.router.deployment, False, "/"))
    return specs


def grpc_options(config: ServeConfig) -> dict:
    servicers = GRPC_SERVICER_FUNCTIONS + (SERVICE_SERVICER_FUNCTIONS if config.services_exposed else [])
    options: dict = {"port": config.router.grpc_port, "grpc_servicer_functions": servicers}
    if config.router.request_timeout_s is not None:
        options["request_timeout_s"] = config.router.request_timeout_s
    return options


def serve_config_dict(config: ServeConfig, http_host: str = "0.0.0.0", http_port: int = 8000) -> dict:
    """A Ray Serve config (ServeDeploySchema) deploying the system described by `config`."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": http_host, "port": http_port},
        "grpc_options": grpc_options(config),
        "applications": [{"name": spec.name, "route_prefix": spec.route_prefix, "import_path": spec.import_path,
                          "args": spec.args, "deployments": [{"name": spec.deployment, **spec.options()}]}
                         for spec in app_specs(config)],
    }


def required_resources(config: ServeConfig) -> dict[str, float]:
    """CPUs and GPUs the replicas take at start (autoscaled applications at min_replicas)."""
    total = {"CPU": 0.0, "GPU": 0.0}
    for spec in app_specs(config):
        scaling = spec.config.autoscaling_config
        replicas = scaling.min_replicas if scaling is not None else spec.config.num_replicas or 1
        actor = spec.config.ray_actor_options
        total["CPU"] += replicas * actor.num_cpus
        total["GPU"] += replicas * actor.num_gpus
    return total


def check_fits(config: ServeConfig, num_cpus: float, num_gpus: float) -> None:
    """ValueError unless the replicas fit the machine (Ray Serve would otherwise wait forever)."""
    needed = required_resources(config)
    for kind, have in (("CPU", num_cpus), ("GPU", num_gpus)):
        if needed[kind] > have + 1e-9:
            per_app = ", ".join(f"{s.name}: {getattr(s.config.ray_actor_options, 'num_' + kind.lower() + 's')}"
                                for s in app_specs(config))
            raise ValueError(f"the replicas need {needed[kind]:g} {kind}s but this machine offers {have:g} "
                             f"({per_app} per replica); lower ray_actor_options.num_{kind.lower()}s or replicas "
                             f"in the serving config")


def check_paths(config: ServeConfig) -> None:
    """Local runs: a missing head checkpoint is an error now, not a replica crash loop later."""
    missing = [f"{name}: {d.path}" for name, d in config.drafters.items() if d.path is not None and not d.path.exists()]
    if missing:
        raise ValueError(f"drafter checkpoints not found: {'; '.join(missing)}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_local(config: ServeConfig, num_cpus: float | None = None, num_gpus: float | None = None,
              temp_dir: str | None = None, http_port: int | None = None, log_to_driver: bool = False) -> str:
    """Start a local Ray, deploy every application and wait until all run; returns the gRPC address.

    HTTP (unused by TAPS) goes to a free port unless `http_port` is given. Ray's gRPC proxy listens on all
    interfaces; the address returned is the loopback one. `log_to_driver` prints the replicas' stderr here.
    """
    import ray
    import torch
    from ray import serve

    num_cpus = float(num_cpus if num_cpus is not None else os.cpu_count() or 1)
    num_gpus = float(num_gpus if num_gpus is not None else torch.cuda.device_count())
    check_fits(config, num_cpus, num_gpus)
    check_paths(config)
    if config.router.api_keys is not None:  # the replicas read the same environment and files: fail here first
        load_digests(config.router.api_keys)
    config.router.redis()
    config.warn_random_drafters()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ[MESSAGE_SIZE_ENV] = str(config.router.max_message_bytes)
    ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, log_to_driver=log_to_driver,
             object_store_memory=OBJECT_STORE_BYTES, _temp_dir=temp_dir)
    serve.start(http_options={"host": "127.0.0.1", "port": http_port or free_port()},
                grpc_options=grpc_options(config))
    serve.run_many([serve.RunTarget(spec.builder()(spec.args, spec.options()), name=spec.name,
                                    route_prefix=spec.route_prefix) for spec in app_specs(config)])
    return f"127.0.0.1:{config.router.grpc_port}"


def shutdown_local() -> None:
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        ray.shutdown()
