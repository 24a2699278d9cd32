"""What verification costs on this machine: the target's step time as a function of the tree size.

Speculation pays when the tokens a step commits outweigh what the step costs relative to a plain one, and that
ratio depends on the machine (a GPU verifies 60 nodes for about the price of one; a CPU does not), the target and
the dtype. The curve is measured with the engine's own verifier (tree mask, KV compaction included), once per
(machine, target, dtype, threads), and cached under `TAPS_HOME/costs/`; `taps bench cost` measures it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from .fileio import write_json
from .packing import packed_layers
from .settings import bf16_cpu_flags, taps_home
from .target import Target
from .tree import DraftTree
from .verifier import TargetVerifier

SIZES = (1, 2, 4, 8, 16, 32, 64)   # tokens per verification: the root plus n - 1 draft nodes
MEASUREMENT = 2   # how the curve is measured (2: sizes interleaved in rounds); a change retires cached curves


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name, with its family and model numbers: a virtual machine's name can hide the generation (two
    "AMD EPYC" CPUs with AVX512-BF16 multiplied bf16 matrices at 418 and 924 GFLOP/s on 2 cores,
    results/training/feature-forward.md and feature-forward-epyc-zen5.md)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if not key.strip():
            break                                # the first processor's block is enough
        fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


# caps on the instructions the math libraries and torch's own kernels use
ISA_LIMITS = ("MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def isa_limits() -> dict[str, str]:
    """The instruction-set caps in force (e.g. AVX2 on an AMX CPU: how a run stands in for an older CPU)."""
    return {name: os.environ[name] for name in ISA_LIMITS if name in os.environ}


def machine() -> dict:
    """What a speed figure depends on besides the code."""
    flags = bf16_cpu_flags()
    return {"cpu": cpu_model(), "native_bf16": bool(flags), "bf16_flags": flags, "isa_limits": isa_limits(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def machine_line(m: dict | None = None) -> str:
    """`machine()` as a report's sentence: the CPU, whether it has native bf16, caps, cores and threads, GPU."""
    m = m or machine()
    caps = ", ".join(f"{k}={v}" for k, v in m["isa_limits"].items())
    flags = f" ({', '.join(m['bf16_flags'])})" if m.get("bf16_flags") else ""
    return (f"{m['cpu']}, {'native' if m['native_bf16'] else 'no native'} bf16{flags}"
            + (f", capped at {caps}" if caps else "")
            + f", {m['cores']} cores, {m['torch_threads']} torch threads" + (f", GPU {m['gpu']}" if m["gpu"] else ""))


def _chain(n: int, vocab: int, generator: torch.Generator) -> DraftTree:
    tokens = torch.randint(0, vocab, (n,), generator=generator)
    return DraftTree(tokens=tokens, parents=torch.arange(n) - 1, depths=torch.arange(1, n + 1),
                     scores=torch.zeros(n), entropies=torch.zeros(n), sources=torch.zeros(n, dtype=torch.long))


def _sync(target: Target) -> None:
    if target.device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def measure_verify_costs(target: Target, context: int = 200, reps: int = 5,
                         sizes: tuple[int, ...] = SIZES) -> dict[int, float]:
    """Median milliseconds of one verification of `n` tokens (a chain of n - 1 drafts under the root) after a
    `context`-token prefix, for each n in `sizes`. Each round verifies every size once, so a slow spell of the
    machine (another process, a clock change) costs every size one sample, not one size its median."""
    generator = torch.Generator().manual_seed(0)
    vocab = target.format.vocab_size
    verifier = TargetVerifier(target)
    verifier.prefill(torch.randint(0, vocab, (context,), generator=generator).tolist())
    root = int(torch.randint(0, vocab, (1,), generator=generator))
    trees = {n: _chain(n - 1, vocab, generator) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(reps + 1):                        # the first round warms up
        for n, tree in trees.items():
            _sync(target)
            start = time.perf_counter()
            verifier.verify(root, tree)
            _sync(target)
            times[n].append(time.perf_counter() - start)
            verifier.commit([])                      # back to the prefix
    return {n: round(1e3 * statistics.median(t[1:]), 3) for n, t in times.items()}


def cost_key(target: Target) -> str:
    info = {"target": target.name, "dtype": str(target.dtype), "device": str(target.device), **machine(),
            "packed_linears": packed_layers(target.model), "measurement": MEASUREMENT}
    return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def cost_path(target: Target) -> Path:
    return taps_home() / "costs" / f"{cost_key(target)}.json"


def verify_costs(target: Target, remeasure: bool = False) -> dict[int, float]:
    """The cached cost curve of this (machine, target, dtype, threads), measured when missing."""
    path = cost_path(target)
    if path.exists() and not remeasure:
        return {int(n): ms for n, ms in json.loads(path.read_text())["verify_ms"].items()}
    curve = measure_verify_costs(target)
    try:
        write_json(path, {"target": target.name, "dtype": str(target.dtype).replace("torch.", ""),
                          "device": str(target.device), "machine": machine(), "verify_ms": curve})
    except OSError as e:   # the cache only saves the next start a measurement
        warnings.warn(f"could not cache the verify cost curve in {path}: {e}")
    return curve
