#!/usr/bin/env bash
# studies/learning-gpu.toml on one CUDA GPU, as four studies at once (one per architecture),
# then one report over all of them:
#
#   scripts/gpu_study.sh BIN_DIR OUT_DIR [DATA_DIR]
#
# BIN_DIR holds release builds of `conveyor` and `conveyor-torch`; DATA_DIR stands in for
# ../shared/data on a machine without it (the study's sst2, trec, ag_news, c4 and spiece
# files at the same relative paths). OUT_DIR gets each architecture's study folder and log,
# report/ (conveyor report over every evaluation) and log.txt. LIMIT (seconds, default 540)
# bounds each study: a cell cut short is missing from the report, not wrong in it.
# DRY_RUN=1 runs it on the CPU at the tiny preset with a few steps, to check the script.
set -u
BIN=$(cd "$1" && pwd)
OUT=$(mkdir -p "$2" && cd "$2" && pwd)
DATA=${3:-../shared/data}
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CONVEYOR_PYTHON=${CONVEYOR_PYTHON:-python3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
LIMIT=${LIMIT:-540}
{
echo "=== $(date +%T) learning-gpu, data from $DATA"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
for arch in transformer lightconv dilatedconv dynamicconv; do
  python3 - studies/learning-gpu.toml "$OUT/$arch.toml" "$arch" "$DATA" "${DRY_RUN:-0}" <<'PY'
import re, sys
src, dst, arch, data, dry = sys.argv[1:]
s = open(src).read().replace("../shared/data", data)
s = re.sub(r'^archs = .*$', f'archs = ["{arch}"]', s, flags=re.M)
s = re.sub(r'^name = .*$', f'name = "learning-gpu-{arch}"', s, count=1, flags=re.M)
if dry == "1":
    s = s.replace('device = "cuda"', 'device = "cpu"').replace('"small"', '"tiny"')
    s = re.sub(r'^steps = \d+$', 'steps = 4', s, flags=re.M)
    s = re.sub(r'^batch_size = 128$', 'batch_size = 8', s, flags=re.M)
open(dst, "w").write(s)
PY
  timeout "$LIMIT" "$BIN/conveyor" study "$OUT/$arch.toml" --out "$OUT/$arch" > "$OUT/$arch.log" 2>&1 &
done
wait
echo "=== $(date +%T) studies ended"
for arch in transformer lightconv dilatedconv dynamicconv; do
  echo "--- $arch: $(grep -c '^\[cell' "$OUT/$arch.log") cell lines; last: $(grep '^\[cell' "$OUT/$arch.log" | tail -1)"
done
echo "--- median seconds per step of each run (from its metrics.jsonl)"
python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
for m in sorted(glob.glob(os.path.join(sys.argv[1], "*/runs/*/metrics.jsonl"))):
    t = [json.loads(l)["elapsed_s"] for l in open(m)]
    d = sorted(b - a for a, b in zip(t, t[1:]))
    if d:
        print(f"{os.path.basename(os.path.dirname(m)):55} {len(t):5} steps  {1000 * d[len(d) // 2]:7.1f} ms/step")
PY
runs=()
for arch in transformer lightconv dilatedconv dynamicconv; do
  [ -d "$OUT/$arch/runs" ] && runs+=("$OUT/$arch/runs")
done
"$BIN/conveyor" report "${runs[@]}" --out "$OUT/report"
echo "=== $(date +%T) done"
} 2>&1 | tee "$OUT/log.txt"
