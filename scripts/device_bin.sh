#!/usr/bin/env bash
# Prepares the binaries a device run carries (scripts/gpu_checks.sh needs PyTorch there, not
# Rust): a release build, both binaries stripped into DIR (default .device/bin, git-ignored),
# and a check that the CUDA graph and NCCL bridges in them are real, not the stand-ins a
# libtorch without CUDA headers gets (their stages would fail on the device).
#
#   scripts/device_bin.sh [DIR]
#
# Then carry DIR's parent with the device tool and run `scripts/gpu_checks.sh DIR $OUT`.
set -euo pipefail
DIR=$(realpath -m "${1:-.device/bin}")
cd "$(dirname "$0")/.."
# The build `make release` makes (its set-up, environment and whole-workspace features).
make release
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$DIR"
for b in conveyor conveyor-torch; do strip -o "$DIR/$b" "$TARGET/release/$b"; done
VENV=$(scripts/setup.sh)
export LD_LIBRARY_PATH=$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
line=$("$DIR/conveyor-torch" env | grep "cuda graph bridge" || true)
echo "$line"
case $line in
  *"cuda graph bridge: built, nccl bridge: built"*) ;;
  *) echo "the bridges are stand-ins: rebuild against the CUDA torch wheel (scripts/setup.sh)" >&2; exit 1 ;;
esac
du -sh "$DIR"
