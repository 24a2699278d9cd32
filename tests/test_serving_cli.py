"""`taps serve` and `taps client`: config outputs, clean errors, and a smoke run of the whole system with the real
SmolLM2 target (a `taps serve` process, answered through `taps client generate`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
import yaml
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from serving_helpers import wait_until
from services.app import free_port, serve_config_dict
from services.cli import register
from services.config import load_serve_config
from taps_engine import PlainDecoder

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIG = ROOT / "configs" / "serve" / "gpu.yaml"
# `taps` itself gets these commands from taps_engine/cli.py; here they run on their own
CLI = ("import typer; from services.cli import register; app = typer.Typer(pretty_exceptions_enable=False); "
       "register(app); app()")


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()
    register(app)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_serve_writes_the_serve_config_and_the_rayservice(cli, tmp_path):
    result = cli("serve", "--config", GPU_CONFIG, "--serve-yaml", tmp_path / "serve.yaml",
                 "--emit-rayservice", tmp_path / "rayservice.yaml", "--image", "example/taps:1")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((tmp_path / "serve.yaml").read_text())
    assert written == serve_config_dict(load_serve_config(GPU_CONFIG))
    ServeDeploySchema.model_validate(written)
    manifest = yaml.safe_load((tmp_path / "rayservice.yaml").read_text())
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == written
    committed = yaml.safe_load((ROOT / "k8s" / "rayservice.yaml").read_text())
    assert manifest["spec"]["serveConfigV2"] == committed["spec"]["serveConfigV2"]


def test_serve_port_override(cli, tmp_path):
    result = cli("serve", "--port", "9123", "--serve-yaml", tmp_path / "serve.yaml")
    assert result.exit_code == 0
    assert yaml.safe_load((tmp_path / "serve.yaml").read_text())["grpc_options"]["port"] == 9123


@pytest.mark.parametrize("args, message", [
    (["serve", "--config", "missing.yaml"], "cannot read config missing.yaml"),
    (["serve", "--port", "70000", "--serve-yaml", "x.yaml"], "grpc_port"),
    (["serve", "--config", ROOT / "configs" / "serve" / "local.yaml", "--num-cpus", "0.5"], "need 1 CPUs"),
    (["client", "generate", "--server", "127.0.0.1:1", "--timeout", "5", "hi"], "UNAVAILABLE"),
    (["client", "health", "--server", "127.0.0.1:1", "--timeout", "5"], "UNAVAILABLE"),
])
def test_errors_are_one_clean_line(cli, args, message):
    result = cli(*args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.real_model
@pytest.mark.ray
def test_taps_serve_with_the_real_target_answers_like_the_engine(smollm2, tmp_path, tmp_path_factory):
    """The whole system from the command line: `taps serve` (SmolLM2, two random heads, fp32), then
    `taps client generate`; the answer equals the in-process greedy output."""
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "dtype": "fp32", "tree": {"total_tokens": 8, "depth": 3, "top_k": 2},
        "drafters": {"math": {}, "chat": {}},
        "router": {"default_policy": "merged", "default_max_new_tokens": 16}}))
    ray_dir = tmp_path_factory.mktemp("ray")  # a short path: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_TMPDIR": str(ray_dir), "TAPS_SERVER": f"127.0.0.1:{port}"}
    server = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--config", str(config), "--port", str(port),
                               "--num-cpus", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=tmp_path)
    try:
        lines: list[str] = []
        _serving(server, lines)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        answer = subprocess.run([sys.executable, "-c", CLI, "client", "generate", "--json",
                                 messages[0]["content"]], capture_output=True, text=True, env=env, timeout=300)
        assert answer.returncode == 0, answer.stderr + "".join(lines)
        response = json.loads(answer.stdout)
        expected = PlainDecoder(smollm2).generate(messages, max_new_tokens=16)
        assert [int(t) for t in response["tokenIds"]] == expected.token_ids
        assert response["text"] == expected.text and response["policy"] == "merged-concat"
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _serving(server: subprocess.Popen, lines: list[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = server.stdout.readline()
        assert line or server.poll() is None, "".join(lines)
        lines.append(line)
        if line.startswith("TAPS serving on"):
            return
    pytest.fail("taps serve did not start:\n" + "".join(lines))


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_taps_serve_shows_replica_logs_and_stops_cleanly(models, tmp_path, tmp_path_factory, stop):
    """Started in the background (SIGINT ignored, as a shell's `&` does), `taps serve --log-level info` prints
    the replicas' own log lines, and SIGTERM or SIGINT stops it with no process of its Ray left running."""
    import psutil

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "target": models["target"], "dtype": "fp32", "tree": {"total_tokens": 8, "depth": 3, "top_k": 2},
        "drafters": {"a": {"path": models["heads"]["a"]}}}))
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path_factory.mktemp("ray"))}
    server = subprocess.Popen([sys.executable, "-c", CLI, "serve", "--config", str(config), "--port",
                               str(free_port()), "--num-cpus", "2", "--log-level", "info"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    lines: list[str] = []
    try:
        _serving(server, lines)
        tree = psutil.Process(server.pid).children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in tree)
        server.send_signal(stop)
        rest, _ = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
    output = "".join(lines) + rest
    assert server.returncode == 0, output
    assert "drafter 'a' ready" in output and "verifier ready" in output, output
    assert wait_until(lambda: not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE],
                      timeout_s=30, interval_s=0.5), [p.cmdline() for p in tree if p.is_running()]
