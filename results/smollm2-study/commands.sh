#!/usr/bin/env bash
# How results/smollm2-study/ was produced (2-core CPUs; HOW_IT_RAN.md says on which). Every step is resumable:
# run it again and it continues where its records.jsonl stops. Each part ran as two one-thread shards:
#   taps eval ... --shard 0/2 --threads 1 &  taps eval ... --shard 1/2 --threads 1 &  wait
# and its report is the same command with --report-only.
set -euo pipefail

# T=0: 80 MT-Bench questions (both turns) + 200 each of GSM8K, MATH-500, SVAMP, 13 runs, replay in fp32
taps eval --config configs/eval/smollm2.yaml --profile study --out results/smollm2-study

# T=1: 30 prompts per benchmark x 3 seeds, 7 runs, live in lock step with path verification, fp32
taps eval --config configs/eval/smollm2.yaml --profile study-sampled --out results/smollm2-study/sampled

# Averaging: the parents not shipped in the repository, then the α sweep of three pairs and their weight distances
for name in eagle2-chat-seed1 eagle2-math-from-mixed eagle2-chat-from-mixed; do
  taps train --config configs/smollm2/$name.yaml --threads 1
done
taps eval --config configs/eval/averaging.yaml --out results/smollm2-study/averaging
python benchmarks/weight_distances.py --config configs/eval/averaging.yaml --seed 0 --seed 1 \
  --extra mixed=taps_engine/drafters/smollm2-135m-instruct/eagle2-mixed \
  --out results/smollm2-study/averaging/weight_distances.md
