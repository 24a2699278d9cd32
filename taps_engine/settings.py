"""Where TAPS keeps caches and finds data, and which device/dtype it computes in."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
          "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}


NUMERICS = ("fast", "exact")


def numerics_dtype(dtype: str, numerics: str) -> str:
    """The dtype a run computes in. `exact`: fp32, where a tree forward's rows round as one-token forwards' rows
    do, so every policy's T=0 output is plain greedy decoding's, token for token, on every path (failures and
    fallbacks included). `fast`: `dtype` as given; in bf16 a forward over n tokens rounds differently from n
    one-token forwards, so T=0 outputs may drift from plain decoding after a while (still lossless in
    distribution)."""
    if numerics not in NUMERICS:
        raise ValueError(f"unknown numerics {numerics!r}; use fast or exact")
    if numerics == "fast":
        return dtype
    if dtype not in ("auto", "fp32", "float32"):
        raise ValueError(f"numerics exact computes in fp32; it cannot be combined with dtype {dtype!r}")
    return "fp32"


def taps_home() -> Path:
    """Cache root for converted models, features and trained drafters (never inside the repository)."""
    return Path(os.environ.get("TAPS_HOME", Path.home() / ".cache" / "taps")).expanduser()


def data_dir() -> Path:
    """Data sets directory: `TAPS_DATA_DIR`, else `../shared/data` next to the checkout when it exists."""
    env = os.environ.get("TAPS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


BF16_FLAGS = ("amx_bf16", "avx512_bf16")   # /proc/cpuinfo flags of CPUs with native bf16 matmuls


def bf16_cpu_flags() -> list[str]:
    """Which native-bf16 flags this CPU has: AMX runs bf16 matmuls several times faster than AVX512-BF16 alone,
    so a speed figure names them."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return [flag for flag in BF16_FLAGS if flag in flags]


def cpu_has_fast_bf16() -> bool:
    """AMX/AVX512-BF16 CPUs run bf16 matmuls several times faster than fp32; others emulate bf16 slowly."""
    return bool(bf16_cpu_flags())


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`auto`/None picks bf16 on CUDA and on CPUs with native bf16, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]
