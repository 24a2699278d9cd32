#!/usr/bin/env bash
# How results/smollm2-small/ was produced (2-core CPU machine, fp32, drafters from configs/smollm2/ via `taps train`).
# The run is resumable: each invocation only generates the records that are missing. The HASS chat and mixed
# drafters were still training when the experiment started, so their runs were added afterwards.
set -euo pipefail
taps eval --config configs/eval/smollm2.yaml --profile small --runs '^(?!hass-(chat|mixed)$)'
taps eval --config configs/eval/smollm2.yaml --profile small --runs '^hass-chat$'
taps train --config configs/smollm2/hass-mixed.yaml && taps eval --config configs/eval/smollm2.yaml --profile small --runs '^hass-mixed$'  # not in the committed tables yet
taps eval --config configs/eval/smollm2.yaml --profile small --report-only
