#!/usr/bin/env bash
# How results/targets/gemma-3-270m.md was made (run from the repository root; 2 torch threads).
set -euo pipefail
export OMP_NUM_THREADS=2
CONFIG=configs/gemma3-270m/eagle2-chat.yaml
HEAD="${TAPS_HOME:-$HOME/.cache/taps}/drafters/gemma3-270m-eagle2-chat"
FULL="${TAPS_HOME:-$HOME/.cache/taps}/heads/gemma3-270m-eagle2-chat-full"

# load time once the GGUF has been assembled and dequantized into TAPS_HOME (the first load does that)
/usr/bin/time -f "later load + 1 token: %e s" taps generate --target gemma-3-270m --raw --max-new-tokens 1 \
    "The capital of France is"

# the drafter: chat data rendered as plain text (a base model), 4 epochs, a 16,384-token draft vocabulary
taps train --config "$CONFIG" --threads 2
# the same head drafting from the full 262,144-token vocabulary
taps draft-vocab --config "$CONFIG" --size 0 --head "$HEAD" --out "$FULL"

# plain loop vs transformers generate, and the drafter with both vocabularies, interleaved per prompt
taps bench speed --target gemma-3-270m -d chat="$HEAD" -d chat-full="$FULL" --policy single --tree 16/3/4 \
    --benchmark mt_bench --benchmark gsm8k --prompts 3 --max-new-tokens 64 --no-fallback \
    --out results/targets/gemma-3-270m-speed.json
