"""The committed gRPC code matches protos/taps/v1/taps.proto: CI fails when the proto changes without
`python services/gen_protos.py`. Also checks the generated modules import as a package from anywhere."""

import subprocess
import sys

from services import gen_protos


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_committed_code_is_current(tmp_path):
    gen_protos.generate(tmp_path)
    fresh, committed = _files(tmp_path), _files(gen_protos.OUT)
    assert sorted(fresh) == sorted(committed), "generated file set differs: run `python services/gen_protos.py`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `python services/gen_protos.py`"


def test_generated_modules_import_as_a_package(tmp_path):
    """Ray Serve's gRPC proxy imports the servicer module by name, from its own working directory."""
    code = ("from services.protos_gen.taps.v1 import taps_pb2, taps_pb2_grpc\n"
            "assert taps_pb2_grpc.taps_dot_v1_dot_taps__pb2 is taps_pb2\n"
            "assert hasattr(taps_pb2_grpc, 'add_RouterServicer_to_server')\n"
            "print(taps_pb2.DESCRIPTOR.package)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "taps.v1"
