#!/usr/bin/env bash
# Peak memory of `conveyor ingest` on hostile and huge inputs (docs/safety.md): a 1 MB
# .json.gz holding one 1 GB word, one 200 MB document, and one document just under the
# default 16 MiB limit. Needs the release binary (cargo build --release) and /usr/bin/time.
# Usage: scripts/hostile_memory.sh [TARGET_DIR]   (default: $CARGO_TARGET_DIR or ./target)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}}/release/conveyor"
vocab=../shared/data/spiece/t5-spiece.model
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import gzip, sys
d = sys.argv[1]
words = b"the quick brown fox jumps over the lazy dog and keeps running far away " * 1000
def doc(name, size, filler, level):
    with gzip.open(f"{d}/{name}", "wb", compresslevel=level) as f:
        f.write(b'{"text": "')
        n = 0
        while n + len(filler) <= size:
            f.write(filler)
            n += len(filler)
        f.write(b'"}\n{"text": "a normal document after it"}\n')
doc("word-1g.json.gz", 1 << 30, b"a" * (1 << 20), 9)
doc("doc-200m.json.gz", 200 << 20, words, 1)
doc("doc-16m.json.gz", (16 << 20) - 200_000, words, 1)
PY
for f in word-1g doc-200m doc-16m; do
  /usr/bin/time -v "$bin" ingest "$work/$f.json.gz" --vocab "$vocab" --out "$work/out-$f" -q --json \
    > "$work/$f.json" 2> "$work/$f.time"
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/$f.time")
  wall=$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$work/$f.time")
  docs=$(python3 -c "import json;m=json.load(open('$work/out-$f/manifest.json'));t=m['totals'];print(t['documents'], 'documents, skipped', t['skipped'])")
  printf '%-10s peak RSS %6d MB  wall %s  %s\n' "$f" $((rss / 1024)) "$wall" "$docs"
done
