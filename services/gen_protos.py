"""Generate the Python gRPC code for protos/taps/v1/taps.proto into services/protos_gen/.

Run `python services/gen_protos.py` (or `make protos`) after editing the proto. The output is committed, so
serving needs no build step; tests/test_protos_current.py regenerates into a temporary directory and fails when
the committed files differ.

protoc writes `from taps.v1 import taps_pb2` into the `_pb2_grpc` module, which only resolves with
services/protos_gen itself on sys.path. We rewrite it to a relative import so the code imports as the package
`services.protos_gen.taps.v1` from anywhere the project is installed (Ray Serve's gRPC proxy included). The
message classes are likewise renamed into that package (`__module__`): Ray Serve's gRPC proxy pickles the parsed
request to hand it to a replica, and pickle finds a class by its module name.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
PROTO = Path("taps/v1/taps.proto")
OUT = ROOT / "services" / "protos_gen"
PACKAGE = "services.protos_gen"  # where OUT imports from

_INIT = '"""Generated from protos/{proto} by services/gen_protos.py: do not edit, regenerate."""\n'


def _protoc(out: Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", str(PROTO_ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO}")


def _relative_imports(path: Path) -> None:
    module = PROTO.with_suffix("").name + "_pb2"              # taps_pb2
    package = ".".join(PROTO.parent.parts)                     # taps.v1
    text = path.read_text()
    fixed = text.replace(f"from {package} import {module} as", f"from . import {module} as")
    if f"from {package} import" in fixed or f"import {package}." in fixed:
        raise RuntimeError(f"{path.name}: an absolute import of {package} is left after the rewrite")
    path.write_text(fixed)


def _module_name(path: Path) -> None:
    module = ".".join(PROTO.with_suffix("").parts) + "_pb2"    # taps.v1.taps_pb2
    text = path.read_text()
    needle = f"(DESCRIPTOR, '{module}', _globals)"
    if needle not in text:
        raise RuntimeError(f"{path.name}: no message builder call naming {module}")
    path.write_text(text.replace(needle, f"(DESCRIPTOR, '{PACKAGE}.{module}', _globals)"))


def generate(out: Path = OUT) -> list[Path]:
    """Write the generated package under `out` (replacing what was there); returns the files, sorted."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        _protoc(staged)
        for grpc_module in staged.rglob("*_pb2_grpc.py"):
            _relative_imports(grpc_module)
        for messages_module in staged.rglob("*_pb2.py"):
            _module_name(messages_module)
        package_dir = staged
        for part in (*PROTO.parent.parts, None):
            (package_dir / "__init__.py").write_text(_INIT.format(proto=PROTO))
            if part is not None:
                package_dir = package_dir / part
        out.mkdir(parents=True, exist_ok=True)
        top = out / PROTO.parts[0]
        if top.exists():
            shutil.rmtree(top)
        shutil.copytree(staged / PROTO.parts[0], top)
        shutil.copy2(staged / "__init__.py", out / "__init__.py")
    return sorted(p for p in out.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    for written in generate(target):
        print(written.relative_to(target))
