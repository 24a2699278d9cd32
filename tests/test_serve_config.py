"""Serving config: defaults, the example file, YAML round trip, strict validation with clear messages."""

import logging
from pathlib import Path

import pytest
import yaml

from services.config import (DeploymentConfig, ServeConfig, embedded_defaults,
                             load_serve_config)
from taps_engine.drafter_specs import DEFAULTS, SHIPPED, default_drafters
from taps_engine.head import head_method
from taps_engine.policies import POLICIES
from taps_engine.target import DEFAULT_TARGET
from taps_engine.tree import PAPER_TREE, SPEED_CPU_TREE

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "serve" / "local.yaml"


def _write(tmp_path: Path, raw) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_defaults_are_valid_and_fit_one_machine():
    config = ServeConfig()
    assert config.target == "smollm2-135m-instruct" and config.dtype == "auto"
    assert config.tree == SPEED_CPU_TREE   # no GPUs asked for: the CPU's cost-aware tree
    gpu = ServeConfig.model_validate({"verifier": {"deployment": {"ray_actor_options": {"num_gpus": 1}}}})
    assert gpu.tree == PAPER_TREE
    assert set(config.drafters) == {"math", "chat"} and all(d.path is None for d in config.drafters.values())
    assert config.router.grpc_port == 9000 and config.router.redis_url is None
    assert config.router.default_policy in POLICIES
    assert DeploymentConfig().serve_options() == {"ray_actor_options": {"num_cpus": 0.25, "num_gpus": 0.0},
                                                  "num_replicas": 1}
    apps = [*config.drafters.values(), config.verifier, config.router]
    assert sum(a.deployment.ray_actor_options.num_cpus for a in apps) <= 2


def test_every_policy_can_be_the_server_default():
    for name in POLICIES:
        assert ServeConfig.model_validate({"router": {"default_policy": name}}).router.default_policy == name


def test_example_config_points_at_the_shipped_drafters():
    config = load_serve_config(EXAMPLE)
    assert set(config.drafters) == {"math", "chat"}
    defaults = default_drafters(DEFAULT_TARGET)
    for name, drafter in config.drafters.items():
        assert drafter.path.resolve() == defaults[name].resolve(), "the example serves the default drafters"
        assert drafter.method == head_method(defaults[name])
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert all(not Path(d["path"]).is_absolute() for d in raw["drafters"].values())  # no machine paths
    chat = config.drafters["chat"].deployment.serve_options()
    assert chat["autoscaling_config"]["max_replicas"] == 2 and "num_replicas" not in chat
    most = sum(a.deployment.ray_actor_options.num_cpus * (a.deployment.autoscaling_config.max_replicas
                                                          if a.deployment.autoscaling_config else
                                                          a.deployment.num_replicas or 1)
               for a in [*config.drafters.values(), config.verifier, config.router])
    assert most <= 2, "the example must fit two cores even fully scaled"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic models
def test_deployment_options_pass_rays_own_schema():
    from ray.serve.schema import DeploymentSchema

    config = load_serve_config(EXAMPLE)
    apps = {f"drafter-{n}": d.deployment for n, d in config.drafters.items()}
    apps.update(verifier=config.verifier.deployment, router=config.router.deployment)
    for name, deployment in apps.items():
        DeploymentSchema.model_validate({"name": name, **deployment.serve_options()})


def test_yaml_round_trip(tmp_path):
    config = load_serve_config(EXAMPLE)
    config.router.redis_url = "redis://127.0.0.1:6379/0"
    again = load_serve_config(_write(tmp_path, config.model_dump(mode="json")))
    assert again == config


def test_relative_drafter_paths_are_relative_to_the_file(tmp_path):
    path = _write(tmp_path, {"drafters": {"math": {"path": "heads/math"}}})
    assert load_serve_config(path).drafters["math"].path == tmp_path / "heads" / "math"


@pytest.mark.parametrize("raw,message", [
    ({"drafters": {"math": {"deployment": {"num_replicas": 0}}}},
     "drafters.math.deployment.num_replicas: Input should be greater than or equal to 1"),
    ({"verifier": {"deployment": {"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}}},
     "verifier.deployment: set either num_replicas or autoscaling_config, not both"),
    ({"router": {"deployment": {"autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}}},
     "min_replicas (3) exceeds max_replicas (2)"),
    ({"router": {"grpc_port": 70000}}, "router.grpc_port: Input should be less than or equal to 65535"),
    ({"router": {"default_policy": "fastest"}}, "router.default_policy: unknown policy 'fastest'; choose one of plain, single"),
    ({"router": {"default_max_new_tokens": 4000}}, "default_max_new_tokens (4000) exceeds max_new_tokens_cap (1024)"),
    ({"router": {"redis_url": "localhost:6379"}}, "redis_url must start with redis://"),
    ({"router": {"assignment_ttl_s": 0}}, "router.assignment_ttl_s: Input should be greater than 0"),
    ({"router": {"grpc_prot": 9001}}, "router.grpc_prot: Extra inputs are not permitted"),
    ({"tree": {"total_tokens": 1}}, "tree: total_tokens must be >= 2"),
    ({"dtype": "fp8"}, "dtype: unknown dtype 'fp8'"),
    ({"drafters": {}}, "drafters: Dictionary should have at least 1 item"),
    ({"drafters": {"drafter math": {}}}, "must be 1-50 letters"),
    ({"drafters": {"math": {"method": "medusa"}}}, "drafters.math.method: Input should be 'eagle2' or 'hass'"),
    ({"drafters": {"math": {"deployment": {"ray_actor_options": {"num_cpus": -1}}}}},
     "ray_actor_options.num_cpus: Input should be greater than or equal to 0"),
    ({"drafters": {"math": {"session_cache_size": 0}}}, "drafters.math.session_cache_size"),
])
def test_bad_values_rejected_with_file_and_field(tmp_path, raw, message):
    path = _write(tmp_path, raw)
    with pytest.raises(ValueError) as e:
        load_serve_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ValueError, match="cannot read config"):
        load_serve_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="invalid YAML"):
        load_serve_config(_write(tmp_path, "router: [unclosed"))
    with pytest.raises(ValueError, match="expected a mapping"):
        load_serve_config(_write(tmp_path, "- a list\n"))


def test_embedded_defaults_use_the_shipped_drafters(monkeypatch, tmp_path, caplog):
    config = embedded_defaults()
    for name in ("math", "chat"):
        shipped = SHIPPED / DEFAULT_TARGET / DEFAULTS[name]
        assert config.drafters[name].path == (shipped if (shipped / "config.json").exists() else None)
        assert config.drafters[name].method == head_method(shipped)
    assert head_method(SHIPPED / DEFAULT_TARGET / "hass-math") == "hass", "a HASS head is listed as one"
    monkeypatch.setattr("taps_engine.drafter_specs.SHIPPED", tmp_path)   # a target without shipped drafters
    with caplog.at_level(logging.WARNING, logger="services.config"):
        assert embedded_defaults().warn_random_drafters() == ["math", "chat"]
    assert "random (untrained) heads" in caplog.text