"""The KubeRay RayService manifest, generated from the same serving config as local serving.

`serveConfigV2` is exactly `serve_config_dict(config)` (services/app.py), so the applications, replicas,
autoscaling and GPUs deployed on Kubernetes are the ones `taps serve --config` runs locally; a test keeps the
committed k8s/rayservice.yaml equal to the generator's output. The cluster around it: a head pod that runs Ray's
control plane and proxies but no replicas (`num-cpus: 0`), and one autoscaled group of GPU workers for the
verifier, drafter and router replicas. The gRPC port is exposed through the RayService's serve Service, which
KubeRay points at the pods whose Serve proxies are healthy.
"""

from __future__ import annotations

import yaml

from .app import serve_config_dict
from .config import ServeConfig

RAY_VERSION = "2.60.0"
HTTP_PORT = 8000
# Where the image keeps TAPS_HOME (converted targets, trained drafters): a volume the operator fills.
MODELS_MOUNT = "/models"


# The Ray images run as user `ray` (uid 1000); nothing in a TAPS pod needs root or extra privileges.
SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
POD_LABELS = {"app.kubernetes.io/part-of": "taps", "app.kubernetes.io/component": "ray"}  # k8s/redis.yaml allows these


def secret_env(config: ServeConfig) -> list[dict]:
    """Environment variables the serving config reads (API key digests, the Redis URL with its password), each
    from its own Secret, so that neither the manifest nor serveConfigV2 holds a credential."""
    router = config.router
    wanted = []
    if router.api_keys is not None and router.api_keys.env is not None:
        wanted.append((router.api_keys.env, "taps-api-keys", "digests"))
    if router.redis_url_env is not None:
        wanted.append((router.redis_url_env, "taps-redis", "url"))
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} for env, secret, key in wanted]


def _container(name: str, image: str, resources: dict, ports: list[dict], secrets: list[dict]) -> dict:
    return {"name": name, "image": image, "ports": ports, "resources": {"requests": resources, "limits": resources},
            "env": [{"name": "TAPS_HOME", "value": f"{MODELS_MOUNT}/taps"}, *secrets],
            "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}],
            "securityContext": SECURITY_CONTEXT}


def _pod(container: dict, models_claim: str) -> dict:
    return {"metadata": {"labels": dict(POD_LABELS)},
            "spec": {"containers": [container], "securityContext": {"runAsNonRoot": True, "fsGroup": 100},
                     "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": models_claim}}]}}


def rayservice_manifest(config: ServeConfig, image: str, name: str = "taps", gpus_per_worker: int = 1,
                        min_workers: int = 1, max_workers: int = 8, models_claim: str = "taps-models") -> dict:
    grpc_port = config.router.grpc_port
    serve_config = serve_config_dict(config, http_port=HTTP_PORT)
    head_ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}, {"containerPort": HTTP_PORT, "name": "serve"},
                  {"containerPort": grpc_port, "name": "grpc"}]
    worker_ports = [{"containerPort": HTTP_PORT, "name": "serve"}, {"containerPort": grpc_port, "name": "grpc"}]
    gpu = {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": str(gpus_per_worker)}
    secrets = secret_env(config)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "taps"}},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config, sort_keys=False),
            "serveService": {
                "metadata": {"name": f"{name}-serve"},
                "spec": {"ports": [{"name": "grpc", "port": grpc_port, "targetPort": grpc_port},
                                   {"name": "serve", "port": HTTP_PORT, "targetPort": HTTP_PORT}]},
            },
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod(_container("ray-head", image, {"cpu": "4", "memory": "16Gi"}, head_ports,
                                                secrets),
                                     models_claim),
                },
                "workerGroupSpecs": [{
                    "groupName": "gpu",
                    "replicas": min_workers,
                    "minReplicas": min_workers,
                    "maxReplicas": max_workers,
                    "rayStartParams": {},
                    "template": _pod(_container("ray-worker", image, gpu, worker_ports, secrets), models_claim),
                }],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, readable in the manifest."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def rayservice_yaml(config: ServeConfig, image: str, command: str, **options) -> str:
    """The manifest as YAML, headed by the command that regenerates it."""
    header = f"# Generated by `{command}`:\n# edit the serving config and regenerate, do not edit by hand.\n"
    return header + yaml.dump(rayservice_manifest(config, image, **options), Dumper=_Dumper, sort_keys=False,
                              width=120)
