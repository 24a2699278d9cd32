#!/usr/bin/env bash
# The GPU checks, for a machine that holds only this checkout (no network, no project install, no target weights):
# the lossless tests on CUDA (tests/tiny.py's TAPS_TEST_DEVICE) and the engine's bf16 step times against its plain
# loop (benchmarks/gpu_speed.py, the default target's architecture with random weights and the default drafters).
#
#   bash benchmarks/gpu_check.sh prepare    # here: wheels the GPU image lacks into .whl/, the target's config and
#                                           # tokenizer into .gpu/ (both git-ignored through .git/info/exclude)
#   bash benchmarks/gpu_check.sh run OUT    # there, from the checkout's root, with .whl and .gpu carried along
# A machine that takes a working tree of at most 64 MiB needs results/smollm2-study, the records.jsonl files and the
# shipped drafters other than the defaults moved aside for the run (the checkout is about 145 MB).
set -euo pipefail
mode=${1:?usage: gpu_check.sh prepare | run OUT}
case $mode in
prepare)
    for d in /.whl/ /.gpu/; do grep -qxF $d .git/info/exclude || echo $d >> .git/info/exclude; done
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing-extensions==4.16.0 transformers==5.24.0
    model=$(python -c "from taps_engine.target import DEFAULT_TARGET, resolve_target_path as r; print(r(DEFAULT_TARGET))")
    mkdir -p .gpu/arch && cp "$model"/*.json "$model"/*.jinja .gpu/arch/
    ;;
run)
    out=${2:?usage: gpu_check.sh run OUT}
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt"
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
        >> "$out/gpu.txt"
    drafters=$(python3 -c "from taps_engine.drafter_specs import default_drafters as d; from taps_engine.target import \
DEFAULT_TARGET as t; print(' '.join(f'--drafter {n}={p}' for n, p in d(t).items()))")
    # shellcheck disable=SC2086
    timeout 240 python3 benchmarks/gpu_speed.py --arch .gpu/arch $drafters --out "$out/gpu_speed" \
        > "$out/gpu_speed.log" 2>&1 || echo "gpu_speed failed: $?"
    TAPS_TEST_DEVICE=cuda timeout 220 python3 -m pytest -q -p no:cacheprovider --durations=5 \
        tests/test_lossless_greedy.py tests/test_lossless_sampling.py > "$out/lossless_cuda.log" 2>&1 \
        || echo "lossless tests failed: $?"
    tail -3 "$out/lossless_cuda.log"; cat "$out/gpu.txt" "$out/gpu_speed.md" 2>/dev/null || true
    ;;
*) echo "usage: gpu_check.sh prepare | run OUT" >&2; exit 2 ;;
esac
