import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(4, torch.get_num_threads())))


@pytest.fixture(scope="session")
def smollm2():
    """The real default target in fp32 (exact-equality tests) — converted from GGUF once per cache dir."""
    from taps_engine import load_target

    return load_target(dtype="fp32")


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (chat template included), from the converted default target."""
    from transformers import AutoTokenizer

    from taps_engine.target import DEFAULT_TARGET, resolve_target_path

    return AutoTokenizer.from_pretrained(resolve_target_path(DEFAULT_TARGET))


@pytest.fixture(scope="session")
def real_data():
    """The real data dir (TAPS_DATA_DIR or ../shared/data); skips when the evaluation files are absent."""
    from taps_engine.eval_sets import BENCHMARK_FILES
    from taps_engine.settings import data_dir

    root = data_dir()
    missing = [rel for rel in BENCHMARK_FILES.values() if not (root / rel).is_file()]
    if missing:
        pytest.skip(f"no evaluation data under {root} (missing {', '.join(missing)})")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    """A tiny random target (real SmolLM2 tokenizer) and two heads saved to disk, as the serving replicas load them."""
    from serving_helpers import save_serving_models

    return save_serving_models(tmp_path_factory.mktemp("serving-models"), tokenizer)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A tiny GSM8K/MATH train data dir and a scratch TAPS_HOME."""
    root = tmp_path / "data"
    for rel, records in {
        "gsm8k/train.jsonl": [{"question": f"Tom has {i} apples and buys {i + 2} more. How many now?",
                               "answer": f"{i} + {i + 2} = {2 * i + 2}.\n#### {2 * i + 2}"} for i in range(6)],
        "math/train.jsonl": [{"problem": f"Solve $x + {i} = {2 * i}$.", "solution": f"$x = \\boxed{{{i}}}$."}
                             for i in range(6)],
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setenv("TAPS_DATA_DIR", str(root))
    monkeypatch.setenv("TAPS_HOME", str(tmp_path / "home"))
    return root


class RedisProcess:
    """A throw-away `redis-server` on a free loopback port: no persistence, files in a temp dir; optionally with a
    password, and with TLS only (a self-signed certificate made here with `openssl`; `.url` is then rediss://
    with the certificate as `ssl_ca_certs`)."""

    def __init__(self, workdir: Path, password: str | None = None, tls: bool = False) -> None:
        import shutil
        import socket
        import ssl
        import subprocess
        import time

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        if tls and shutil.which("openssl") is None:
            pytest.skip("openssl is not installed (apt-get install openssl)")
        workdir.mkdir(parents=True, exist_ok=True)
        options = ["--requirepass", password] if password else []
        context = None
        if tls:
            cert, key = workdir / "cert.pem", workdir / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout",
                            str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            context = ssl.create_default_context(cafile=str(cert))
        for _ in range(5):  # the free port can be taken between probing and binding: try another
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file",
                     str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"] if tls \
                else ["--port", str(self.port)]
            self.proc = subprocess.Popen(
                [binary, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(workdir), "--logfile", str(workdir / f"redis-{self.port}.log"), *options],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw:
                        conn = context.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
                        conn.sendall(b"PING\r\n")
                        if conn.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                            auth = f":{password}@" if password else ""
                            self.url = f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={cert}" if tls \
                                else f"redis://{auth}127.0.0.1:{self.port}/0"
                            return
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"redis-server did not start; see {workdir}")

    def stop(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """URL of a real redis-server shared by the session's tests (skips when redis-server is not installed)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path):
    """A redis-server for one test, which may stop it (`.stop()`) to exercise failure handling; `.url`."""
    server = RedisProcess(tmp_path / "redis")
    yield server
    server.stop()
