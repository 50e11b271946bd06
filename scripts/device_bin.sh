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
# As the Makefile does under CI: one target folder shared by clones.
if [ -n "${CI:-}" ]; then export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/conveyor/target}; fi
# The build `make release` makes (its set-up, environment and whole-workspace features).
make release
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$DIR"
for b in conveyor conveyor-torch; do strip -o "$DIR/$b" "$TARGET/release/$b"; done
# The model crate's unit-test binary, built as `make test` builds it (the whole workspace, so
# that features resolve the same), found in cargo's messages.
VENV=$(scripts/setup.sh)
TORCH=$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LIBTORCH=$TORCH LIBTORCH_CXX11_ABI=1 PATH="$VENV/bin:$PATH"
# Compiler messages go to stderr as cargo would print them; one executable is expected.
tests=$(cargo test --release --workspace --no-run --message-format=json | "$VENV/bin/python" -c '
import json, sys
found = []
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-message":
        print(m["message"].get("rendered", ""), file=sys.stderr, end="")
    t = m.get("target", {})
    if (m.get("executable") and m.get("profile", {}).get("test") and t.get("name") == "conveyor_model"
            and "lib" in t.get("kind", [])):
        found.append(m["executable"])
if len(found) == 1:
    print(found[0])
else:
    sys.exit(f"expected one unit-test binary of conveyor-model, cargo built {found}")')
strip -o "$DIR/model-tests" "$tests"
# The Python package as `make python` installs it (the example trainer's stage): its Python
# files and its native module, stripped, in DIR/../python/conveyor.
make python
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PKG=$(dirname "$DIR")/python/conveyor
mkdir -p "$PKG"
cp "$SITE"/conveyor/*.py "$SITE"/conveyor/*.pyi "$SITE"/conveyor/py.typed "$PKG"/
strip -o "$PKG/_native.abi3.so" "$SITE/conveyor/_native.abi3.so"
export LD_LIBRARY_PATH=$TORCH/lib
line=$("$DIR/conveyor-torch" env | grep "cuda graph bridge" || true)
echo "$line"
case $line in
  *"cuda graph bridge: built, nccl bridge: built"*) ;;
  *) echo "the bridges are stand-ins: rebuild against the CUDA torch wheel (scripts/setup.sh)" >&2; exit 1 ;;
esac
du -sh "$DIR" "$(dirname "$PKG")"
# A device run carries at most 64 MiB.
kb=$(du -sk "$(dirname "$DIR")" | cut -f1)
[ "$kb" -le 65536 ] || { echo "$(dirname "$DIR") is ${kb} KiB: over the 64 MiB a device run carries" >&2; exit 1; }
