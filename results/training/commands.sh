#!/usr/bin/env bash
# How results/training/ was produced (2-core CPU machine, fp32). Each drafter trains with one thread; the two
# drafters ran side by side, then the tau measurements ran two at a time.
set -euo pipefail
H=${TAPS_HOME:-~/.cache/taps}/drafters
taps train --config configs/smollm2/eagle2-math.yaml &
taps train --config configs/smollm2/eagle2-chat.yaml &
wait
for kind in math chat; do
  for tree in "60 5 10 paper" "16 4 4 small"; do
    set -- $tree
    OMP_NUM_THREADS=1 taps bench tau --drafter $kind=$H/smollm2-eagle2-$kind --policy single \
      --total-tokens $1 --depth $2 --top-k $3 --benchmark gsm8k --benchmark mt_bench --n 20 \
      --max-new-tokens 96 --out results/training/tau-$kind-$4.json
  done &
done
wait
# HASS math drafter (reuses the math features), measured with the CPU-sized tree only (session time)
taps train --config configs/smollm2/hass-math.yaml
taps bench tau --drafter math-hass=$H/smollm2-hass-math --policy single --total-tokens 16 --depth 4 --top-k 4 \
  --benchmark gsm8k --benchmark mt_bench --n 20 --max-new-tokens 96 --out results/training/tau-math-hass-small.json
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-math.yaml --examples 48
python benchmarks/training_report.py --records results/training/tau-math-paper.json \
  --records results/training/tau-chat-paper.json --records results/training/tau-math-small.json \
  --records results/training/tau-chat-small.json --records results/training/tau-math-hass-small.json \
  --drafter $H/smollm2-eagle2-math --drafter $H/smollm2-eagle2-chat --drafter $H/smollm2-hass-math \
  --notes results/training/notes.md --merged results/training/records.json --out results/training/first-drafters.md

# Self-distilled drafters (results/training/README.md): the target's own greedy replies as training data, then the
# drafter choice on the four benchmarks by replay (exact T=0 τ, fp32); the math one is shipped as eagle2-math.
taps train --config configs/smollm2/eagle2-math-self.yaml &
taps train --config configs/smollm2/eagle2-chat-self.yaml &
wait
taps eval --config configs/eval/drafters.yaml --out results/training/drafters
taps export --config configs/smollm2/eagle2-math-self.yaml --out taps_engine/drafters/smollm2-135m-instruct/eagle2-math

# This round: the shipped heads trained longer (init_from), a HASS epoch from the chat head, their bf16 exports
# evaluated as they would ship, then shipped (eagle2-chat, eagle2-math replaced; hass-chat added)
taps train --config configs/smollm2/eagle2-chat-long.yaml &
taps train --config configs/smollm2/eagle2-math-long.yaml &
wait
taps train --config configs/smollm2/hass-chat-tuned.yaml
for n in eagle2-chat-long eagle2-math-long hass-chat-tuned; do
  taps export --config configs/smollm2/$n.yaml --out ${TAPS_HOME:-~/.cache/taps}/export/$n
done
taps eval --config configs/eval/drafters.yaml --profile one-thread --out results/training/drafters
taps eval --config configs/eval/drafters.yaml --out results/training/drafters --report-only
D=taps_engine/drafters/smollm2-135m-instruct
cp ${TAPS_HOME:-~/.cache/taps}/export/eagle2-chat-long/* $D/eagle2-chat/
cp ${TAPS_HOME:-~/.cache/taps}/export/eagle2-math-long/* $D/eagle2-math/
mkdir -p $D/hass-chat && cp ${TAPS_HOME:-~/.cache/taps}/export/hass-chat-tuned/* $D/hass-chat/
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-math.yaml --examples 48 --epochs 1 --threads 2 \
  --out results/training/throughput-amx.md
# HASS math: two HASS epochs from the shipped math head; evaluated as exported, shipped as hass-math
taps train --config configs/smollm2/hass-math-tuned.yaml
taps export --config configs/smollm2/hass-math-tuned.yaml --out ${TAPS_HOME:-~/.cache/taps}/export/hass-math-tuned
taps eval --config configs/eval/drafters.yaml --profile one-thread --out results/training/drafters --runs '^hass-math$'
taps eval --config configs/eval/drafters.yaml --out results/training/drafters --report-only
mkdir -p $D/hass-math && cp ${TAPS_HOME:-~/.cache/taps}/export/hass-math-tuned/* $D/hass-math/
# the same on two other 2-core CPUs (AVX2 only; AVX512-BF16 without AMX)
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-math.yaml --examples 48 --epochs 1 --threads 2 \
  --out results/training/throughput-epyc-avx2.md
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-math.yaml --examples 48 --epochs 1 --threads 2 \
  --out results/training/throughput-epyc-avx512bf16.md

# Round 3 (candidates/): a self-distilled mixed head fine-tuned from the shipped math head (shipped as
# eagle2-mixed-self), the chat head on 2.5x the chat data alone and from the mixed head (the latter shipped as
# eagle2-chat-from-mixed-self), the vocabulary-loss ablation; then all of them and routing on the four benchmarks
taps train --config configs/smollm2/eagle2-mixed-self.yaml
taps export --config configs/smollm2/eagle2-mixed-self.yaml --out ${TAPS_HOME:-~/.cache/taps}/export/eagle2-mixed-self
mkdir -p $D/eagle2-mixed-self && cp ${TAPS_HOME:-~/.cache/taps}/export/eagle2-mixed-self/* $D/eagle2-mixed-self/
taps train --config configs/smollm2/eagle2-chat-more.yaml &
taps train --config configs/smollm2/ablate-ce-quarter.yaml &
taps train --config configs/smollm2/ablate-full-ce.yaml &
wait
taps train --config configs/smollm2/eagle2-chat-from-mixed-self.yaml   # reuses eagle2-chat-more's cached features
taps export --config configs/smollm2/eagle2-chat-from-mixed-self.yaml \
  --out ${TAPS_HOME:-~/.cache/taps}/export/eagle2-chat-from-mixed-self
mkdir -p $D/eagle2-chat-from-mixed-self
cp ${TAPS_HOME:-~/.cache/taps}/export/eagle2-chat-from-mixed-self/* $D/eagle2-chat-from-mixed-self/
taps eval --config configs/eval/candidates.yaml --out results/training/candidates

# Round 4 (candidates/): the chat head from the mixed head trained longer, CE on a quarter of the positions (7 epochs,
# shipped as eagle2-chat-from-mixed-self-long) against CE on every position (stopped after 3 of its 4 epochs: the
# weights of epoch 3 evaluated); the defaults' routing pair compared
taps train --config configs/smollm2/eagle2-chat-plus-quarter-ce.yaml --threads 1 &
taps train --config configs/smollm2/eagle2-chat-plus-full-ce.yaml --threads 1 &   # stopped after epoch 3
wait
cp -r ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-plus-full-ce \
  ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-plus-full-ce-epoch3
taps export --config configs/smollm2/eagle2-chat-plus-quarter-ce.yaml --out $D/eagle2-chat-from-mixed-self-long
taps eval --config configs/eval/candidates.yaml --out results/training/candidates

# Round 5 (candidates/), one job at a time on 2 cores with AMX: that head on 6,000 conversations (shipped as
# eagle2-chat-6k); the self-distilled mixed recipe from scratch in one sitting (timed, alone on the machine; shipped
# as eagle2-mixed-one-sitting); a chat head from it on the same 6,000 conversations
taps train --config configs/smollm2/eagle2-chat-6k.yaml
taps export --config configs/smollm2/eagle2-chat-6k.yaml --out $D/eagle2-chat-6k
time taps train --config configs/smollm2/eagle2-mixed-one-sitting.yaml
taps export --config configs/smollm2/eagle2-mixed-one-sitting.yaml --out $D/eagle2-mixed-one-sitting
taps train --config configs/smollm2/eagle2-chat-from-one-sitting.yaml
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-from-one-sitting/train_log.json \
  results/training/candidates/train_logs/eagle2-chat-from-one-sitting.train_log.json
taps train --config configs/smollm2/eagle2-chat-one-sitting.yaml   # alone on the cores; features from the cache
taps export --config configs/smollm2/eagle2-chat-one-sitting.yaml \
  --out ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-one-sitting-bf16
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-one-sitting/train_log.json \
  results/training/candidates/train_logs/eagle2-chat-one-sitting.train_log.json
# (this round ran it as --runs 'chat-6k|mixed-one-sitting', --runs 'chat-from-one-sitting', --runs
# mixed-one-sitting and --runs chat-one-sitting: the cache of the machine held only this round's candidates; the report covers every record)
taps eval --config configs/eval/candidates.yaml --out results/training/candidates
COLUMNS=120 taps demo > results/training/make-run.txt   # what `make run` prints with the defaults
taps eval --config configs/eval/chat-heads-cpu-tree.yaml --out results/training/chat-heads-cpu-tree

# Round 6, one job at a time on 2 cores with AMX: a mixed head with the chat data in one sitting (6,000 conversations
# with their data set replies + 1,200 math prompts with the target's own replies, answers: {math: target}; timed,
# alone on the machine), then it alone and as the chat half of the routing pair, at the paper tree and the CPU tree
time taps train --config configs/smollm2/eagle2-mixed-chat-one-sitting.yaml
taps export --config configs/smollm2/eagle2-mixed-chat-one-sitting.yaml \
  --out ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-mixed-chat-one-sitting-bf16
mkdir -p $D/eagle2-mixed-chat-one-sitting   # shipped, and made the chat default
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-mixed-chat-one-sitting-bf16/* $D/eagle2-mixed-chat-one-sitting/
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-mixed-chat-one-sitting/train_log.json \
  results/training/candidates/train_logs/eagle2-mixed-chat-one-sitting.train_log.json
taps eval --config configs/eval/candidates.yaml --out results/training/candidates --runs mixed-chat-one-sitting
taps eval --config configs/eval/chat-heads-cpu-tree.yaml --out results/training/chat-heads-cpu-tree \
  --runs mixed-chat-one-sitting
time taps train --config configs/smollm2/eagle2-mixed-chat-4ep.yaml   # data from the cache: training alone
taps export --config configs/smollm2/eagle2-mixed-chat-4ep.yaml \
  --out ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-mixed-chat-4ep-bf16
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-mixed-chat-4ep/train_log.json \
  results/training/candidates/train_logs/eagle2-mixed-chat-4ep.train_log.json
taps eval --config configs/eval/candidates.yaml --out results/training/candidates --runs mixed-chat-4ep
D=taps_engine/drafters/smollm2-135m-instruct   # demo-defaults.txt: the two default pairs and the new head alone
for i in 1 2; do
  COLUMNS=120 taps demo --drafter math=$D/eagle2-mixed-one-sitting --drafter chat=$D/eagle2-chat-6k
  COLUMNS=120 taps demo --drafter math=$D/eagle2-mixed-one-sitting --drafter chat=$D/eagle2-mixed-chat-one-sitting
  COLUMNS=120 taps demo --policy single --drafter mixed-chat=$D/eagle2-mixed-chat-one-sitting
done
COLUMNS=120 taps demo > results/training/make-run.txt   # what `make run` prints with the new defaults

# Round 7, alone on 2 cores with AMX: the 6-epoch mixed chat recipe cut to 4,000 conversations to fit an hour, timed
# from an empty cache (TAPS_HOME of its own), then it alone and as the chat half of the routing pair
TAPS_HOME=/tmp/taps-timing bash -c 'time taps train --config configs/smollm2/eagle2-mixed-chat-hour.yaml'
TAPS_HOME=/tmp/taps-timing taps export --config configs/smollm2/eagle2-mixed-chat-hour.yaml \
  --out ~/.cache/taps/drafters/smollm2-eagle2-mixed-chat-hour-bf16
cp /tmp/taps-timing/drafters/smollm2-eagle2-mixed-chat-hour/train_log.json \
  results/training/candidates/train_logs/eagle2-mixed-chat-hour.train_log.json
taps eval --config configs/eval/candidates.yaml --out results/training/candidates \
  --runs '^mixed-chat-hour$|mixed-one-sitting\+mixed-chat-hour'
# The same recipe with its vocabulary losses over the draft vocabulary on every position (ce_vocab: draft), from the
# cache of the run above (training alone), then timed alone from an empty cache; shipped and made the chat default
TAPS_HOME=/tmp/taps-timing bash -c 'time taps train --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml'
TAPS_HOME=/tmp/taps-timing taps export --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml \
  --out ~/.cache/taps/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce-bf16
cp /tmp/taps-timing/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce/train_log.json \
  results/training/candidates/train_logs/eagle2-mixed-chat-hour-draft-ce.train_log.json
mkdir -p $D/eagle2-mixed-chat-hour-draft-ce
cp ~/.cache/taps/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce-bf16/* $D/eagle2-mixed-chat-hour-draft-ce/
taps eval --config configs/eval/candidates.yaml --out results/training/candidates --runs mixed-chat-hour-draft-ce
taps eval --config configs/eval/candidates.yaml --out results/training/candidates --report-only   # + routing vs the head
taps eval --config configs/eval/chat-heads-cpu-tree.yaml --out results/training/chat-heads-cpu-tree \
  --runs mixed-chat-hour-draft-ce
TAPS_HOME=/tmp/taps-timing3 bash -c 'time taps train --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml'
TAPS_HOME=/tmp/taps-timing3 taps export --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --out /tmp/export3
cmp /tmp/export3/model.safetensors $D/eagle2-mixed-chat-hour-draft-ce/model.safetensors   # the same weights
cp /tmp/export3/train_log.json $D/eagle2-mixed-chat-hour-draft-ce/   # with the timed run's times
cp /tmp/taps-timing3/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce/train_log.json \
  results/training/candidates/train_logs/eagle2-mixed-chat-hour-draft-ce.train_log.json
# The 6,000-conversation recipe with the same losses, alone from an empty cache, stopped after epoch 1 (Ctrl-C)
TAPS_HOME=/tmp/taps-timing2 taps train --config configs/smollm2/eagle2-mixed-chat-draft-ce.yaml
cp /tmp/taps-timing2/drafters/smollm2-eagle2-mixed-chat-draft-ce/train_log.json \
  results/training/candidates/train_logs/eagle2-mixed-chat-draft-ce.train_log.json
# The cost of the two vocabulary losses per epoch, A B A B in one process (throughput-losses.md)
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-mixed-chat-hour.yaml --examples 200 \
  --epochs 2 --threads 2 --losses --out results/training/throughput-losses.md
for i in 1 2; do   # demo-round7.txt: round 6's pair, the new pair, the new head alone
  COLUMNS=120 taps demo --drafter math=$D/eagle2-mixed-one-sitting --drafter chat=$D/eagle2-mixed-chat-one-sitting
  COLUMNS=120 taps demo --drafter math=$D/eagle2-mixed-one-sitting --drafter chat=$D/eagle2-mixed-chat-hour-draft-ce
  COLUMNS=120 taps demo --policy single --drafter mixed-chat=$D/eagle2-mixed-chat-hour-draft-ce
done > results/training/demo-round7.txt
COLUMNS=120 taps demo > results/training/make-run.txt   # what `make run` prints with the new defaults
# Round 8 (AMD EPYC, AVX512-BF16, no AMX; empty cache; test runs shared the cores during part of feature caching):
# the chat head in one sitting with the same losses, shipped as eagle2-chat-one-sitting-draft-ce
time taps train --config configs/smollm2/eagle2-chat-one-sitting-draft-ce.yaml
taps export --config configs/smollm2/eagle2-chat-one-sitting-draft-ce.yaml \
  --out ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-bf16
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-one-sitting-draft-ce/train_log.json \
  results/training/candidates/train_logs/eagle2-chat-one-sitting-draft-ce.train_log.json
taps eval --config configs/eval/candidates.yaml --out results/training/candidates --runs chat-one-sitting-draft-ce
D=taps_engine/drafters/smollm2-135m-instruct
mkdir -p $D/eagle2-chat-one-sitting-draft-ce
cp ${TAPS_HOME:-~/.cache/taps}/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-bf16/* $D/eagle2-chat-one-sitting-draft-ce/
# retired (README.md, "Retired drafters"): their rows are kept from the stored records, reported as not checked
git rm -r $D/eagle2-mixed-self $D/eagle2-chat-from-mixed-self $D/eagle2-chat-from-mixed-self-long \
  $D/eagle2-mixed-chat-one-sitting $D/eagle2-chat-6k
taps eval --config configs/eval/candidates.yaml --out results/training/candidates --report-only
taps eval --config configs/eval/chat-heads-cpu-tree.yaml --out results/training/chat-heads-cpu-tree --report-only
taps eval --config configs/eval/candidates.yaml --out results/training/candidates \
  --runs '^confidence\(mixed-one-sitting\+chat-one-sitting-draft-ce\)$'   # the new specialist as the chat half
# Round 9 (AMD EPYC, AVX512-BF16, no AMX; one job at a time, nothing else on the cores): the study's chained
# recipes re-run whole, each from an empty cache (rerun/), and the max-length lever (max-length/)
TAPS_HOME=/tmp/taps-time/chat time taps train --config configs/smollm2/eagle2-chat-long.yaml --threads 2
TAPS_HOME=/tmp/taps-time/chat time taps train --config configs/smollm2/eagle2-chat-len640.yaml --threads 2
for n in eagle2-chat eagle2-chat-long eagle2-chat-len640; do
  TAPS_HOME=/tmp/taps-time/chat taps export --config configs/smollm2/$n.yaml --out ~/.cache/taps/drafters/smollm2-$n-bf16
  cp /tmp/taps-time/chat/drafters/smollm2-$n/train_log.json results/training/rerun/train_logs/$n.train_log.json
done
taps eval --config configs/eval/max-length.yaml --out results/training/max-length
TAPS_HOME=/tmp/taps-time/math time taps train --config configs/smollm2/hass-math-tuned.yaml --threads 2
for n in eagle2-math-self eagle2-math-long hass-math-tuned; do
  cp /tmp/taps-time/math/drafters/smollm2-$n/train_log.json results/training/rerun/train_logs/$n.train_log.json
done
TAPS_HOME=/tmp/taps-time/hass-chat time taps train --config configs/smollm2/hass-chat-tuned.yaml --threads 2
cp /tmp/taps-time/hass-chat/drafters/smollm2-hass-chat-tuned/train_log.json \
  results/training/rerun/train_logs/hass-chat-tuned.train_log.json
for n in eagle2-math-long hass-math-tuned; do
  TAPS_HOME=/tmp/taps-time/math taps export --config configs/smollm2/$n.yaml --out ~/.cache/taps/drafters/smollm2-$n-rerun-bf16
done
TAPS_HOME=/tmp/taps-time/hass-chat taps export --config configs/smollm2/hass-chat-tuned.yaml \
  --out ~/.cache/taps/drafters/smollm2-hass-chat-tuned-rerun-bf16
taps eval --config configs/eval/rerun.yaml --out results/training/rerun
TAPS_HOME=/tmp/taps-time/mixed time taps train --config configs/smollm2/eagle2-mixed.yaml --threads 2
cp /tmp/taps-time/mixed/drafters/smollm2-eagle2-mixed/train_log.json results/training/rerun/train_logs/eagle2-mixed.train_log.json
# Round 10 (AMD EPYC, AVX512-BF16, no AMX; alone on the cores): the chat specialist's recipe timed whole, and what
# bounds feature caching on this CPU
TAPS_HOME=/tmp/taps-time/chat-draft-ce time taps train --config configs/smollm2/eagle2-chat-one-sitting-draft-ce.yaml --threads 2
cp /tmp/taps-time/chat-draft-ce/drafters/smollm2-eagle2-chat-one-sitting-draft-ce/train_log.json \
  results/training/rerun/train_logs/eagle2-chat-one-sitting-draft-ce.train_log.json
python benchmarks/feature_forward.py --config configs/smollm2/eagle2-chat.yaml --examples 48 --threads 2 --repeats 3
# Round 11 (AMD EPYC, AVX512-BF16, no AMX; alone on the cores): the chat specialist's recipe cut to 5 epochs, timed
# whole and measured against the shipped 7-epoch head; self-distillation's generation loop; the default mixed
# drafter's recipe timed whole with it
TAPS_HOME=/tmp/taps-time/chat-5ep time taps train --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-5ep.yaml --threads 2
cp /tmp/taps-time/chat-5ep/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-5ep/train_log.json \
  results/training/rerun/train_logs/eagle2-chat-one-sitting-draft-ce-5ep.train_log.json
TAPS_HOME=/tmp/taps-time/chat-5ep taps export --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-5ep.yaml \
  --out ~/.cache/taps/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-5ep-bf16
taps eval --config configs/eval/hour.yaml --out results/training/hour
python benchmarks/distill_generation.py --config configs/smollm2/eagle2-mixed-one-sitting.yaml --batches 6 --threads 2
TAPS_HOME=/tmp/taps-time/mixed-hour time taps train --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --threads 2
cp /tmp/taps-time/mixed-hour/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce/train_log.json \
  results/training/rerun/train_logs/eagle2-mixed-chat-hour-draft-ce.train_log.json
# Round 12 (AMD EPYC, AVX512-BF16, no AMX; alone on the cores): training with one forward per optimizer batch and
# feature caching without a padding mask; the default math drafter's recipe timed whole with both, and its head
# measured against the shipped one
python benchmarks/feature_forward.py --config configs/smollm2/eagle2-chat.yaml --examples 48 --threads 2 --repeats 3
TAPS_HOME=/tmp/taps-time/math-one time taps train --config configs/smollm2/eagle2-mixed-one-sitting.yaml --threads 2
cp /tmp/taps-time/math-one/drafters/smollm2-eagle2-mixed-one-sitting/train_log.json \
  results/training/rerun/train_logs/eagle2-mixed-one-sitting.train_log.json
TAPS_HOME=/tmp/taps-time/math-one taps export --config configs/smollm2/eagle2-mixed-one-sitting.yaml \
  --out ~/.cache/taps/drafters/smollm2-eagle2-mixed-one-sitting-batched-bf16
taps eval --config configs/eval/math-rerun.yaml --out results/training/math-rerun
python benchmarks/train_step.py --config configs/smollm2/eagle2-mixed-one-sitting.yaml --batches 24 \
  --out results/training/train-step-math.md
python benchmarks/train_step.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --batches 24 \
  --out results/training/train-step-chat.md
# Round 13 (AMD EPYC, AVX512-BF16, no AMX; alone on the cores): feature caching's attention in causal chunks,
# batched prefill in self-distillation's loop; the default chat drafter's recipe re-timed whole with both
python benchmarks/feature_forward.py --config configs/smollm2/eagle2-chat.yaml --examples 48 --threads 2 --repeats 3
python benchmarks/distill_generation.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --batches 6 \
  --threads 2 --baseline prefill-one --out results/training/distill-prefill.md
TAPS_HOME=/tmp/taps-time/mixed-hour time taps train --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --threads 2
cp /tmp/taps-time/mixed-hour/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce/train_log.json \
  results/training/rerun/train_logs/eagle2-mixed-chat-hour-draft-ce.round13.train_log.json
# Round 14 (AMD EPYC, AVX512-BF16, no AMX): the vocabulary losses' soft targets cached once (ce_targets_topk), side by
# side with recomputing them; the chat specialist's recipe trained with them on its cached features and measured
# against the shipped head
python benchmarks/train_step.py --config configs/smollm2/eagle2-chat-one-sitting-draft-ce.yaml --batches 24 \
  --threads 2 --compare soft-targets --soft-k 64 --out results/training/train-step-soft-targets.md
time taps train --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml --threads 2
cp ~/.cache/taps/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-top64/train_log.json \
  results/training/rerun/train_logs/eagle2-chat-one-sitting-draft-ce-top64.train_log.json
taps export --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml \
  --out ~/.cache/taps/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-top64-bf16
taps eval --config configs/eval/soft-targets.yaml --out results/training/soft-targets
# Round 15 (AMD EPYC, AVX512-BF16, no AMX; alone on the cores): the default chat drafter's recipe timed whole with
# the cached top-64 soft targets and the self-distillation's kept features, and measured against the shipped head
TAPS_HOME=/tmp/taps-time/r15-top64 time taps train --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce-top64.yaml \
  --threads 2
cp /tmp/taps-time/r15-top64/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce-top64/train_log.json \
  results/training/rerun/train_logs/eagle2-mixed-chat-hour-draft-ce-top64.train_log.json
TAPS_HOME=/tmp/taps-time/r15-top64 taps export --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce-top64.yaml \
  --out ~/.cache/taps/drafters/smollm2-eagle2-mixed-chat-hour-draft-ce-top64-bf16
taps eval --config configs/eval/soft-targets-mixed.yaml --out results/training/soft-targets-mixed
python benchmarks/train_step.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --batches 24 \
  --threads 2 --compare soft-targets --soft-k 64 --out results/training/train-step-soft-targets-mixed.md
python benchmarks/distill_generation.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --batches 6 \
  --threads 2 --baseline no-features --out results/training/distill-kept-features.md
COLUMNS=120 taps demo > results/training/make-run-avx512bf16.txt   # what `make run` prints on this CPU
TAPS_HOME=/tmp/taps-time/r15-chat-top64 time taps train --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml \
  --threads 2
cp /tmp/taps-time/r15-chat-top64/drafters/smollm2-eagle2-chat-one-sitting-draft-ce-top64/train_log.json \
  results/training/rerun/train_logs/eagle2-chat-one-sitting-draft-ce-top64.round15.train_log.json
# Round 16 (AMD EPYC, AVX2 only, no native bf16: fp32; alone on the cores): padding in feature caching's forwards by
# how many shards are grouped, the attention of the feature forwards in fp32, throughput without native bf16, and
# continuous batching in self-distillation (tried at commit 055996d, reverted in the next commit)
python benchmarks/feature_padding.py --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml \
  --examples 512 --threads 2
python benchmarks/feature_forward.py --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml \
  --examples 48 --threads 2 --repeats 3 --out results/training/feature-forward-epyc-avx2.md
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml \
  --examples 48 --threads 2 --out results/training/throughput-epyc-avx2-chat-top64.md
git checkout 055996d -- benchmarks taps_engine training   # the tried code; `git checkout main -- ...` restores
python benchmarks/distill_generation.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce-top64.yaml \
  --batches 3 --threads 2 --baseline fixed-lanes --out results/training/distill-lanes.md
COLUMNS=120 taps demo > results/training/make-run-avx2.txt   # what `make run` prints on a CPU without native bf16; run twice, the second appended
taps bench speed --benchmark gsm8k --prompts 3 --max-new-tokens 96 --policy confidence --tree 16/3/4 --tree 8/3/2 \
  --tree 4/2/2 --no-fallback --out results/training/speed-avx2.md
# the same with MKL's Intel code path forced on the AMD CPU (a probe; the project does not do this)
printf 'int mkl_serv_intel_cpu_true(void) { return 1; }\n' > /tmp/fakeintel.c
gcc -shared -fPIC -o /tmp/libfakeintel.so /tmp/fakeintel.c
LD_PRELOAD=/tmp/libfakeintel.so taps bench speed --benchmark gsm8k --prompts 3 --max-new-tokens 96 --policy confidence \
  --tree 16/3/4 --tree 8/3/2 --tree 4/2/2 --no-fallback --out results/training/speed-avx2-mkl-intel-path.md

# Round 17 (the same AMD EPYC, AVX2 only, fp32; alone on the cores): which policy `make run` uses, and a noise
# allowance for the fallback (tried at commit 1454a60, reverted in the next commit)
git worktree add ../taps-1454a60 1454a60 && cd ../taps-1454a60   # the tried code, beside the checkout
PYTHONPATH=. python benchmarks/fallback_noise.py --prompts 5 --max-new-tokens 128 --out results/engine/fallback-noise.json
PYTHONPATH=. python benchmarks/fallback_noise.py --prompts 8 --max-new-tokens 128 --policy sticky \
  --out results/engine/fallback-noise-sticky.json
cd - && git worktree remove --force ../taps-1454a60   # after copying its results/engine/fallback-noise* over
for i in 1 2; do for p in sticky confidence; do echo "=== run $i policy $p"; COLUMNS=120 taps demo --policy $p; done; done \
  > results/training/make-run-avx2-sticky.txt   # what `make run` prints, alternating the two policies
taps eval --config configs/eval/chat-heads-cpu-tree.yaml --out results/training/chat-heads-cpu-tree --runs '^sticky'

# Round 18 (the same AMD EPYC, AVX2 only, fp32; alone on the cores): fp32 linear layers on oneDNN-packed weights
python benchmarks/packed_linear.py --prompts 5 --max-new-tokens 128 --out results/engine/packed_linear.json
for i in 1 2 3; do echo "=== run $i"; COLUMNS=120 taps demo; done > results/training/make-run-avx2-packed.txt
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-chat-one-sitting-draft-ce-top64.yaml \
  --examples 48 --threads 2 --packing --out results/training/throughput-epyc-avx2-packing.md
taps bench speed --policy sticky --policy confidence --tree 16/3/4 --tree 32/4/4+cost --prompts 5 \
  --max-new-tokens 128 --out results/engine/packed_trees_avx2.json
for i in 1 2; do for t in 16/3/4 32/4/4+cost; do echo "=== run $i tree $t"; COLUMNS=120 taps demo --tree $t; done; done \
  > results/training/make-run-avx2-trees.txt   # the fixed CPU tree against the cost-aware one make run now uses

# Round 19 (the same AMD EPYC, AVX2 only, fp32; alone on the cores except the two replay evaluations): the probe policy
taps eval --config configs/eval/probe-cpu-tree.yaml --out results/engine/probe-cpu-tree
taps eval --config configs/eval/probe-specialists-cpu-tree.yaml --out results/engine/probe-specialists-cpu-tree
taps eval --config configs/eval/probe-specialists-paper-tree.yaml --out results/engine/probe-specialists-paper-tree
taps bench speed --policy sticky --policy probe --policy confidence --tree 32/4/4+cost --prompts 5 \
  --max-new-tokens 128 --out results/engine/probe_speed_defaults_avx2.json
taps bench speed --drafter math=taps_engine/drafters/smollm2-135m-instruct/eagle2-math \
  --drafter chat=taps_engine/drafters/smollm2-135m-instruct/eagle2-chat-one-sitting-draft-ce \
  --policy sticky --policy probe --policy confidence --tree 32/4/4+cost --prompts 5 --max-new-tokens 128 \
  --out results/engine/probe_speed_specialists_avx2.json
for c in 120 160; do for i in 1 2; do for p in sticky probe; do echo "=== run $i policy $p"; COLUMNS=$c taps demo --policy $p
  done; done; done > results/training/make-run-avx2-probe.txt   # (the file adds a header and the two sets' titles)

# Round 24 (AMD EPYC family 26 model 2, AVX512-BF16, no AMX: bf16; alone on the cores): throughput, the three
# recipes timed whole from an empty cache, and what `make run` prints from a fresh clone
python benchmarks/train_throughput.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --examples 48 \
  --threads 2 --out results/training/throughput-epyc-zen5.md
python benchmarks/feature_forward.py --config configs/smollm2/eagle2-mixed-chat-hour-draft-ce.yaml --examples 48 \
  --threads 2 --repeats 3 --out results/training/feature-forward-epyc-zen5.md
for c in eagle2-mixed-chat-hour-draft-ce eagle2-chat-one-sitting-draft-ce \
    eagle2-mixed-one-sitting; do
  TAPS_HOME=/tmp/taps-time/r24-$c /usr/bin/time -v taps train --config configs/smollm2/$c.yaml --threads 2
  cp /tmp/taps-time/r24-$c/drafters/smollm2-$c/train_log.json results/training/rerun/train_logs/$c.round24.train_log.json
done
(git clone -q . /tmp/taps-fresh && cd /tmp/taps-fresh && for i in 1 2; do echo "=== run $i"; COLUMNS=120 make run; done) \
  > results/training/make-run-zen5-avx512bf16.txt   # (the file drops the install's lines and adds a header)
