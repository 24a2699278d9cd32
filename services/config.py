"""The serving config: one YAML file describes the target, the drafters and every Ray Serve application.

Local `taps serve` and the KubeRay RayService manifest are both built from it (one source of truth), so it is
validated strictly: unknown keys, non-positive sizes and inconsistent replica settings are errors naming the file
and the field, never silent defaults. Without a file the defaults describe a one-machine system (two drafters,
fractional CPUs that fit two cores) and `embedded_defaults()` points the drafters at the trained heads the target comes with.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal, Mapping, Optional

from pydantic import Field, field_validator, model_validator

from taps_engine.configfile import Strict, load_yaml_config
from taps_engine.drafter_specs import default_drafters
from taps_engine.head import head_method
from taps_engine.policies import DEFAULT_ROUTING, policy_spec
from taps_engine.settings import DTYPES, numerics_dtype
from taps_engine.target import DEFAULT_TARGET
from taps_engine.tree import TreeSettings, speed_tree

from .assignments import redacted
from .logs import LogLevel

log = logging.getLogger(__name__)

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$"  # becomes part of application and Kubernetes names


class AutoscalingConfig(Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> "AutoscalingConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class ActorOptions(Strict):
    """Resources per replica. Fractional CPUs let several replicas share a core; over-committing a machine's
    CPUs makes Ray Serve wait for resources forever, so keep the sum within the cluster."""

    num_cpus: float = Field(0.25, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: Optional[int] = Field(None, gt=0)              # bytes
    resources: dict[str, float] = Field(default_factory=dict)
    accelerator_type: Optional[str] = None


class DeploymentConfig(Strict):
    """One Ray Serve deployment: a fixed `num_replicas` or an `autoscaling_config`, not both."""

    num_replicas: Optional[int] = Field(None, ge=1)
    autoscaling_config: Optional[AutoscalingConfig] = None
    max_ongoing_requests: Optional[int] = Field(None, ge=1)  # None: Ray Serve's default
    ray_actor_options: ActorOptions = Field(default_factory=ActorOptions)

    @model_validator(mode="after")
    def _replicas(self) -> "DeploymentConfig":
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set either num_replicas or autoscaling_config, not both")
        return self

    def serve_options(self) -> dict:
        """Keyword options for `serve.deployment(...)` / a serveConfigV2 deployment entry."""
        actor = self.ray_actor_options.model_dump(exclude_none=True)
        if not actor["resources"]:
            del actor["resources"]
        options: dict = {"ray_actor_options": actor}
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config.model_dump()
        else:
            options["num_replicas"] = self.num_replicas or 1
        if self.max_ongoing_requests is not None:
            options["max_ongoing_requests"] = self.max_ongoing_requests
        return options


class ModelReplica(Strict):
    """A replica that runs a model: concurrent sessions' steps in one forward (services/batching.py; the
    verifier's verification, a drafter's drafting; `max_batch_size` 1 = one session per forward), on
    `torch_threads` intra-op threads (None: Ray's choice, OMP_NUM_THREADS or else floor(num_cpus), at least 1)."""

    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_s: float = Field(0.002, ge=0, le=1)  # how long an idle replica waits for a batch to fill
    torch_threads: Optional[int] = Field(None, ge=1, le=1024)

    @model_validator(mode="after")
    def _fillable(self) -> "ModelReplica":
        ongoing = self.deployment.max_ongoing_requests
        if ongoing is not None and ongoing < self.max_batch_size:
            raise ValueError(f"max_batch_size {self.max_batch_size} cannot fill: deployment.max_ongoing_requests "
                             f"is {ongoing}")
        if self.max_batch_size > self.session_cache_size:
            raise ValueError(f"max_batch_size {self.max_batch_size} exceeds session_cache_size "
                             f"{self.session_cache_size} (each step in a batch holds a session)")
        return self


class DrafterConfig(ModelReplica):
    path: Optional[Path] = None                   # trained head directory; None = a random head (with a warning)
    method: Literal["eagle2", "hass"] = "eagle2"
    # served elsewhere: HOST:PORT of a TAPS gRPC endpoint with this drafter's application (not deployed here)
    address: Optional[str] = None
    application: Optional[str] = None             # its application name there (default: drafter-<name>)
    # hosted in the verifier's replica (services/colocated.py): no deployment of its own, its trees come back with
    # each Verify (one round trip per step); it shares the verifier's resources, batches and session cache
    colocated: bool = False
    session_cache_size: int = Field(64, ge=1)     # sessions whose KV state a replica keeps (LRU)
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Optional[Path]) -> Optional[Path]:
        return value.expanduser() if value is not None else None

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", value):
            raise ValueError(f"address must be HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _remote(self) -> "DrafterConfig":
        if self.address is None and self.application is not None:
            raise ValueError("application names a drafter served elsewhere: set address too")
        if self.address is not None and self.path is not None:
            raise ValueError("a drafter with an address is served elsewhere: drop path (it is that server's)")
        if self.address is not None and self.colocated:
            raise ValueError("a drafter with an address is served elsewhere: it cannot be co-located with the "
                             "verifier")
        return self

    @property
    def deployed_here(self) -> bool:
        return self.address is None

    @property
    def own_application(self) -> bool:
        """Deployed here as an application of its own (not served elsewhere, not in the verifier's replica)."""
        return self.deployed_here and not self.colocated


class VerifierConfig(ModelReplica):
    session_cache_size: int = Field(32, ge=1)     # target KV caches a replica keeps (LRU): the memory bound
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)


def _check_redis_url(value: Optional[str], source: str) -> Optional[str]:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{source} must start with redis://, rediss:// (TLS) or unix://, got {redacted(value)!r}")
    return value


class ApiKeys(Strict):
    env: Optional[str] = None      # name of an environment variable holding digests (comma or whitespace separated)
    file: Optional[Path] = None    # a file of digests, one per line; `#` starts a comment

    @model_validator(mode="after")
    def _source(self) -> "ApiKeys":
        if self.env is None and self.file is None:
            raise ValueError("api_keys needs `env` (an environment variable) and/or `file` (a path) of key digests")
        return self


class RouterConfig(Strict):
    default_policy: str = DEFAULT_ROUTING
    default_max_new_tokens: int = Field(128, ge=1)
    max_new_tokens_cap: int = Field(1024, ge=1)   # above it: RESOURCE_EXHAUSTED
    max_prompt_tokens: int = Field(4096, ge=1)    # above it: INVALID_ARGUMENT
    grpc_port: int = Field(9000, ge=1, le=65535)
    redis_url: Optional[str] = None               # None: an in-process assignment cache per router replica
    redis_url_env: Optional[str] = None           # or: the environment variable holding it (a password, a Secret)
    assignment_ttl_s: float = Field(86400.0, gt=0)
    assignment_cache_size: int = Field(100_000, ge=1)  # in-process cache bound (without Redis)
    drafter_timeout_s: float = Field(10.0, gt=0)  # one drafter call; past it the request goes on without it
    verifier_timeout_s: float = Field(120.0, gt=0)  # one verifier call; past it the request fails (UNAVAILABLE)
    request_timeout_s: Optional[float] = Field(None, gt=0)  # whole request, at the gRPC proxy: DEADLINE_EXCEEDED
    breaker_cooldown_s: float = Field(1.0, ge=0)     # a failed deployment is skipped by all requests at least this long
    breaker_probe_interval_s: float = Field(0.5, gt=0)  # then probed this often until it answers
    api_keys: Optional[ApiKeys] = None            # None: no keys asked (services/auth.py)
    # how the router reaches drafters and the verifier: Ray deployment handles, or gRPC through the proxy
    transport: Literal["handle", "grpc"] = "handle"
    # drafter and verifier applications answer on the gRPC port too (then clients name the application)
    expose_services: bool = False
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=4 * 1024 * 1024)  # gRPC messages: larger ones are refused
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @field_validator("default_policy")
    @classmethod
    def _policy(cls, value: str) -> str:
        policy_spec(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: Optional[str]) -> Optional[str]:
        return _check_redis_url(value, "redis_url") or None

    def redis(self) -> Optional[str]:
        """The Redis URL: `redis_url`, or the value of `redis_url_env` (ValueError when that is unset or bad)."""
        if self.redis_url_env is None:
            return self.redis_url
        if self.redis_url_env not in os.environ:
            raise ValueError(f"router.redis_url_env: environment variable {self.redis_url_env} is not set")
        return _check_redis_url(os.environ[self.redis_url_env], f"environment variable {self.redis_url_env}")

    @model_validator(mode="after")
    def _limits(self) -> "RouterConfig":
        if self.redis_url is not None and self.redis_url_env is not None:
            raise ValueError("set redis_url or redis_url_env, not both")
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ValueError(f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds max_new_tokens_cap "
                             f"({self.max_new_tokens_cap})")
        return self


def _default_drafters() -> dict[str, DrafterConfig]:
    return {"math": DrafterConfig(), "chat": DrafterConfig()}


class ServeConfig(Strict):
    target: str = DEFAULT_TARGET                  # spec string, as for `taps generate --target`
    dtype: str = "auto"
    # None: the verifier's device decides (taps_engine.tree.speed_tree: cost-aware on CPUs); a cost-aware tree
    # (`cost_aware: true`) is pruned per step by the verifier replica's measured cost curve
    tree: Optional[TreeSettings] = None
    drafters: dict[str, DrafterConfig] = Field(default_factory=_default_drafters, min_length=1)
    verifier: VerifierConfig = Field(default_factory=VerifierConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    log_level: LogLevel = LogLevel.warning        # TAPS log lines from every replica (services/logs.py)
    numerics: Literal["fast", "exact"] = "fast"   # exact: fp32, T=0 output is plain greedy decoding's on every path
    # a request steps plainly while its speculative steps commit fewer tokens per second than plain ones
    # (taps_engine/economics.py); off, every step drafts (step counts then follow the drafts alone)
    fallback: bool = True

    @property
    def compute_dtype(self) -> str:
        """The dtype the replicas load with (`numerics: exact` means fp32; taps_engine.settings.numerics_dtype)."""
        return numerics_dtype(self.dtype, self.numerics)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value != "auto" and value not in DTYPES:
            raise ValueError(f"unknown dtype {value!r}; use one of auto, {', '.join(sorted(DTYPES))}")
        return value

    @model_validator(mode="after")
    def _numerics(self) -> "ServeConfig":
        numerics_dtype(self.dtype, self.numerics)
        return self

    @model_validator(mode="after")
    def _device_tree(self) -> "ServeConfig":
        """Fill in the tree for the device the verifier replicas get (GPUs if they ask for any)."""
        if self.tree is None:
            self.tree = speed_tree("cuda" if self.verifier.deployment.ray_actor_options.num_gpus else "cpu")
        return self

    @field_validator("drafters")
    @classmethod
    def _names(cls, value: dict[str, DrafterConfig]) -> dict[str, DrafterConfig]:
        bad = [name for name in value if not re.match(_NAME, name)]
        if bad:
            raise ValueError(f"drafter names {bad} must be 1-50 letters, digits, '.', '_' or '-' (starting with a "
                             f"letter or digit): they name Ray Serve applications")
        return value

    @property
    def services_exposed(self) -> bool:
        """Whether the drafter and verifier applications get gRPC routes (the grpc transport needs them)."""
        return self.router.expose_services or self.router.transport == "grpc"

    def warn_random_drafters(self) -> list[str]:
        """Names of drafters without a checkpoint (random heads), logged once as a warning."""
        random = [name for name, d in self.drafters.items() if d.path is None and d.deployed_here]
        if random:
            log.warning("drafters %s have no path: serving random (untrained) heads; outputs stay lossless but "
                        "acceptance is poor", ", ".join(random))
        return random


def load_serve_config(path: str | Path) -> ServeConfig:
    """Parse and validate a serving YAML file; ValueError naming the file and every bad field.

    Relative drafter paths are taken relative to the config file's directory; `~` is expanded.
    """
    config = load_yaml_config(path, ServeConfig)
    base = Path(path).expanduser().resolve().parent
    for drafter in config.drafters.values():
        if drafter.path is not None and not drafter.path.is_absolute():
            drafter.path = base / drafter.path
    return config


def use_heads(config: ServeConfig, heads: Mapping[str, Path]) -> ServeConfig:
    """Serve these checkpoints as the config's drafters of the same names, each with the method it records;
    ValueError for a name the config has no drafter for."""
    unknown = [name for name in heads if name not in config.drafters]
    if unknown:
        raise ValueError(f"the config has no drafter {unknown[0]!r} (it has {', '.join(config.drafters)})")
    for name, path in heads.items():
        config.drafters[name].path = path
        config.drafters[name].method = head_method(path)
    return config


def embedded_defaults() -> ServeConfig:
    """The no-config system: the default target with its trained math/chat heads when they exist (random heads
    otherwise, with a warning)."""
    config = ServeConfig()
    return use_heads(config, default_drafters(config.target))
