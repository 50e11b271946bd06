#!/usr/bin/env bash
# Prepares the binaries a device run carries (scripts/gpu_checks.sh needs PyTorch there, not
# Rust): a release build, both binaries and the model crate's unit tests (whose GPU cases —
# CUDA graphs, the multi-tensor and RMS norm kernels, peak memory — only run where there is a
# GPU) stripped into DIR (default .device/bin, git-ignored), and a check that the CUDA graph
# and NCCL bridges in them are real, not the stand-ins a libtorch without CUDA headers gets
# (their stages would fail on the device).
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
# The model crate's unit-test binary, built as `make test` builds it (the whole workspace, so
# that features resolve the same), found in cargo's messages.
VENV=$(scripts/setup.sh)
export LIBTORCH=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LIBTORCH_CXX11_ABI=1 PATH="$VENV/bin:$PATH"
tests=$(cargo test --release --workspace --no-run --message-format=json | "$VENV/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("executable") and t.get("name") == "conveyor_model" and "lib" in t.get("kind", []):
        print(m["executable"])')
[ -n "$tests" ] || { echo "no unit-test binary of conveyor-model in cargo's output" >&2; exit 1; }
strip -o "$DIR/model-tests" "$tests"
export LD_LIBRARY_PATH=$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
line=$("$DIR/conveyor-torch" env | grep "cuda graph bridge" || true)
echo "$line"
case $line in
  *"cuda graph bridge: built, nccl bridge: built"*) ;;
  *) echo "the bridges are stand-ins: rebuild against the CUDA torch wheel (scripts/setup.sh)" >&2; exit 1 ;;
esac
du -sh "$DIR"
