#!/usr/bin/env bash
# The Hugging Face check that needs a CUDA GPU: one T5 training step in conveyor, in the same
# model written in plain PyTorch, and in transformers' T5 with its Adafactor, side by side
# (`conveyor bench step`), base preset, bf16 mixed precision. Needs PyTorch 2.11, not Rust:
#
#   scripts/gpu_hf.sh BIN_DIR OUT_DIR [WHEELS_DIR]
#
# BIN_DIR holds a release build of `conveyor-torch`. On a machine without network, WHEELS_DIR
# holds transformers 4.57.6 and its dependencies as wheels (`pip download`); they are
# installed into a temporary folder, nothing system-wide. OUT_DIR gets hf-step.txt.
# DRY_RUN=1 runs the same on the CPU with the tiny preset, to check the script itself.
set -u
BIN=$(cd "$1" && pwd)
OUT=$2
WHEELS=${3:-}
mkdir -p "$OUT"
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CONVEYOR_PYTHON=${CONVEYOR_PYTHON:-python3}
# One round on a GPU (its step times vary by a few percent, not the tens of a shared CPU's),
# which halves the stage's time within gpu_checks.sh's budget.
DEV=cuda BASE=base BIG=128 ROUNDS=1
if [ "${DRY_RUN:-0}" = 1 ]; then DEV=cpu BASE=tiny BIG=4 ROUNDS=2; fi
{
if ! "$CONVEYOR_PYTHON" -c 'import transformers' 2>/dev/null && [ -n "$WHEELS" ]; then
  LIB=$(mktemp -d)
  "$CONVEYOR_PYTHON" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$LIB" \
      transformers huggingface_hub tokenizers hf-xet safetensors tqdm regex pyyaml requests \
      urllib3 idna charset-normalizer certifi packaging filelock
  export PYTHONPATH=$LIB${PYTHONPATH:+:$PYTHONPATH}
fi
"$CONVEYOR_PYTHON" -c 'import torch, transformers; print("PyTorch", torch.__version__, "transformers", transformers.__version__)'
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || true
# Issue 19's target shape (base, bf16 mixed precision, 128 x 512 inputs / 114 targets), with
# explicit attention and with sdpa on every side, then batch 8, where launch overhead counts
# most. Where a side runs out of GPU memory at batch 128 (explicit attention on an 80 GB H100),
# the same at batch 64, said so.
log=$(mktemp)
for att in explicit sdpa; do
  for b in $BIG $((BIG / 2)); do
    timeout 180 "$BIN/conveyor-torch" bench step --device $DEV --preset $BASE --length 512 --targets-length 114 \
        --batch-size $b --bf16 --attention $att --steps 5 --rounds $ROUNDS 2>&1 | tee "$log"
    grep -Eq "out of (GPU )?memory" "$log" || break
    echo "out of GPU memory at batch $b, $att attention"
  done
done
rm -f "$log"
timeout 120 "$BIN/conveyor-torch" bench step --device $DEV --preset $BASE --length 512 --batch-size 8 --bf16 --steps 10 --rounds $ROUNDS
} 2>&1 | tee "$OUT/hf-step.txt"
