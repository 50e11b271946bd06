#!/usr/bin/env bash
# The checks and benchmarks that need a CUDA GPU, in one pass, for a machine that has
# PyTorch 2.11 (the libtorch conveyor-torch runs against) but need not have Rust:
#
#   scripts/gpu_checks.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds release builds of `conveyor` and `conveyor-torch`; OUT_DIR gets log.txt,
# the bench-train files (JSON, markdown, PNGs), paper-base-step.jsonl and the demo report.
# WHEELS=DIR names transformers' wheels for a machine without network (scripts/gpu_hf.sh).
# Each stage has its own time limit, so one failure does not cost the others.
# DRY_RUN=1 runs the same stages on the CPU with tiny sizes, to check the script itself.
set -u
BIN=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
WORK=${WORK:-$(mktemp -d)}
LOG=$OUT/log.txt
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH=$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CONVEYOR_PYTHON=${CONVEYOR_PYTHON:-python3}
C=$BIN/conveyor
CT=$BIN/conveyor-torch
DEV=cuda BASE=base SMALL=small BIG=128 LENGTHS=64,128,256,512,1024,2048,4096
if [ "${DRY_RUN:-0}" = 1 ]; then DEV=cpu BASE=tiny SMALL=tiny BIG=4 LENGTHS=64,128; fi

stage() { echo; echo "=== $1 ($(date +%T))"; }
{
stage "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("PyTorch", torch.__version__)'
"$CT" env

stage "exact resume on CUDA: 60 steps straight vs 30 + resume to 60"
timeout 120 "$C" ingest fixtures/corpus/*.jsonl --vocab fixtures/vocab/fixture.model --out "$WORK/tokens" -q
common=(--data "$WORK/tokens" --arch lightconv --preset tiny --inputs-length 64 --batch-size 16
        --checkpoint-every 30 --device $DEV --seed 0 -q)
timeout 120 "$CT" train "${common[@]}" --out "$WORK/straight" --steps 60
timeout 120 "$CT" train "${common[@]}" --out "$WORK/resumed" --steps 30
timeout 120 "$CT" train "${common[@]}" --out "$WORK/resumed" --steps 60 --resume
python3 - "$WORK/straight/metrics.jsonl" "$WORK/resumed/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
la = {m["step"]: m["loss"] for m in a}
lb = {m["step"]: m["loss"] for m in b}
diff = max(abs(la[s] - lb[s]) for s in range(31, 61))
print(f"steps 31-60: largest loss difference {diff:.3g} (0 = bit-exact); "
      f"step 60 losses {la[60]:.6f} / {lb[60]:.6f}; peak GPU MB {a[-1].get('peak_gpu_mb')}")
PY

stage "repeatability on CUDA: the same 60 steps twice, then with --deterministic (twice + resumed + read back every step)"
timeout 120 "$CT" train "${common[@]}" --out "$WORK/again" --steps 60
for r in det1 det2; do timeout 120 "$CT" train "${common[@]}" --deterministic --out "$WORK/$r" --steps 60; done
timeout 120 "$CT" train "${common[@]}" --deterministic --out "$WORK/det-resumed" --steps 30
timeout 120 "$CT" train "${common[@]}" --deterministic --out "$WORK/det-resumed" --steps 60 --resume
# Issue 19: figures read back every step instead of every 16 (CUDA's default window).
timeout 120 "$CT" train "${common[@]}" --deterministic --sync-every 1 --out "$WORK/det-sync1" --steps 60
python3 - "$WORK" <<'PY'
import json, sys
def losses(r):
    return {m["step"]: m["loss"] for m in map(json.loads, open(f"{sys.argv[1]}/{r}/metrics.jsonl"))}
def cmp(a, b, first):
    la, lb = losses(a), losses(b)
    d = max(abs(la[s] - lb[s]) for s in range(first, 61))
    same = [s for s in range(first, 61) if la[s] == lb[s]]
    print(f"{a} vs {b}, steps {first}-60: largest difference {d:.3g}; first differing step "
          f"{next((s for s in range(first, 61) if la[s] != lb[s]), None)}")
for a, b, f in [("straight", "again", 1), ("det1", "det2", 1), ("det1", "det-resumed", 31), ("straight", "det1", 1), ("det1", "det-sync1", 1)]:
    try:
        cmp(a, b, f)
    except Exception as e:
        print(f"{a} vs {b}: {e!r}")
PY

stage "bf16 training on CUDA (transformer tiny, 50 steps)"
timeout 120 "$CT" train --data "$WORK/tokens" --arch transformer --preset tiny --inputs-length 64 \
    --batch-size 16 --steps 50 --checkpoint-every 50 --device $DEV --bf16 --out "$WORK/bf16" --json

stage "one T5 step: conveyor, the same model in PyTorch, transformers' T5 (scripts/gpu_hf.sh)"
timeout 450 scripts/gpu_hf.sh "$BIN" "$OUT" ${WHEELS:-}

stage "paper-base cost per step: batch 128 x 512 inputs / 114 targets, base preset, bf16"
for arch in transformer lightconv dynamicconv dilatedconv; do
    timeout 120 "$CT" bench train-one --arch $arch --preset $BASE --length 512 --targets-length 114 \
        --batch-size $BIG --steps 5 --device $DEV --bf16 | tee -a "$OUT/paper-base-step.jsonl"
done

stage "issue 19: CUDA graphs: batch-8 step time by length, eager beside the step replayed from a graph (base, bf16)"
GRAPH=--cuda-graph
if [ "$DEV" = cpu ]; then GRAPH=; fi  # a dry run checks the script: both columns eager
for arch in transformer lightconv; do
  for L in 64 256 1024; do
    for g in "" $GRAPH; do
      timeout 90 "$CT" bench train-one --arch $arch --preset $BASE --length $L --batch-size 8 \
          --steps 20 --device $DEV --bf16 $g | tee -a "$OUT/cuda-graph.jsonl"
    done
  done
done
python3 - "$OUT/cuda-graph.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def f4(x):  # NaN arrives as null
    return "nan" if x is None else f"{x:.4f}"
# Both runs take the same steps on the same batch: their last losses should agree closely
# (dropout draws may differ by the graph's RNG offsets); "CHECK" marks > 2% apart.
print("| arch | length | eager s/step | graph s/step | speed-up | eager loss | graph loss | steps |")
print("|---|---|---|---|---|---|---|---|")
for e in (r for r in rows if not r["cuda_graph"]):
    g = next((r for r in rows if r["cuda_graph"] and r["arch"] == e["arch"] and r["length"] == e["length"]), None)
    if g is None:
        print(f"| {e['arch']} | {e['length']} | {f4(e['seconds_per_step'])} | - | - | {f4(e['final_loss'])} | - | {e['optimizer_steps']} |")
        continue
    el, gl = e["final_loss"], g["final_loss"]
    flag = "" if el is not None and gl is not None and abs(el - gl) <= 0.02 * abs(el) else " CHECK"
    print(f"| {e['arch']} | {e['length']} | {f4(e['seconds_per_step'])} | {f4(g['seconds_per_step'])} | "
          f"{e['seconds_per_step'] / g['seconds_per_step']:.2f}x | {f4(el)} | {f4(gl)}{flag} | "
          f"{e['optimizer_steps']} / {g['optimizer_steps']} |")
PY

stage "issue 19: train --cuda-graph: the same steps as eager (--deterministic), exact resume, and step time at batch 8"
# A dry run has no graph: its "graph" runs are eager, which checks the script only.
timeout 120 "$CT" train "${common[@]}" --deterministic $GRAPH --out "$WORK/graph-det" --steps 60
timeout 120 "$CT" train "${common[@]}" --deterministic $GRAPH --out "$WORK/graph-det-resumed" --steps 30
timeout 120 "$CT" train "${common[@]}" --deterministic $GRAPH --out "$WORK/graph-det-resumed" --steps 60 --resume
gcommon=(--data "$WORK/tokens" --arch transformer --preset $BASE --batch-size 8 --steps 60
         --checkpoint-every 60 --device $DEV --bf16 --seed 0 -q)
for L in 64 256; do
  for g in "" $GRAPH; do
    timeout 120 "$CT" train "${gcommon[@]}" --inputs-length $L $g --out "$WORK/graph-speed-$L${g:+-graph}"
  done
done
python3 - "$WORK" <<'PY'
import json, statistics, sys
def lines(r):
    return list(map(json.loads, open(f"{sys.argv[1]}/{r}/metrics.jsonl")))
def losses(r):
    return {m["step"]: m["loss"] for m in lines(r)}
for a, b, first in [("det1", "graph-det", 1), ("graph-det", "graph-det-resumed", 31)]:
    try:
        la, lb = losses(a), losses(b)
        d = max(abs(la[s] - lb[s]) for s in range(first, 61))
        print(f"{a} vs {b}, steps {first}-60: largest loss difference {d:.3g} (0 = bit-exact); first differing step "
              f"{next((s for s in range(first, 61) if la[s] != lb[s]), None)}")
    except Exception as e:
        print(f"{a} vs {b}: {e!r}")
print("| inputs length | eager examples/s | graph examples/s | speed-up | eager loss 60 | graph loss 60 |")
print("|---|---|---|---|---|---|")
for L in (64, 256):
    try:
        e, g = lines(f"graph-speed-{L}"), lines(f"graph-speed-{L}-graph")
        # Steps 33-60: past the warm-up, capture and the first read-back windows.
        speed = lambda r: statistics.median(m["examples_per_s"] for m in r if m["step"] > 32)
        print(f"| {L} | {speed(e):.1f} | {speed(g):.1f} | {speed(g) / speed(e):.2f}x | {e[-1]['loss']:.4f} | {g[-1]['loss']:.4f} |")
    except Exception as ex:
        print(f"| {L} | {ex!r} |")
PY

stage "Figures 1 and 2 on CUDA: base preset, bf16, batch 8"
timeout 300 "$CT" bench train --device $DEV --preset $BASE --bf16 --batch-size 8 --steps 3 \
    --max-seconds 60 --lengths $LENGTHS --out "$OUT"

stage "issue 19: sdpa attention on CUDA: bf16 losses beside explicit (inputs 576: length mod 128 = 64), then speed, memory, MFU"
echo '{"attention": "sdpa"}' > "$WORK/sdpa.json"
att=(--data "$WORK/tokens" --arch transformer --preset tiny --inputs-length 576 --batch-size 8
     --checkpoint-every 30 --device $DEV --seed 0 --bf16 --steps 30 -q)
timeout 120 "$CT" train "${att[@]}" --out "$WORK/att-explicit"
timeout 120 "$CT" train "${att[@]}" --config "$WORK/sdpa.json" --out "$WORK/att-sdpa"
python3 - "$WORK/att-explicit/metrics.jsonl" "$WORK/att-sdpa/metrics.jsonl" <<'PY'
import json, math, sys
a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:])
bad = [i + 1 for i, x in enumerate(b) if not math.isfinite(x)]
d = max(abs(x - y) for x, y in zip(a, b))
print(f"explicit vs sdpa, bf16, 30 steps: largest loss difference {d:.3g}; "
      f"step 30 {a[-1]:.4f} / {b[-1]:.4f}; non-finite sdpa steps: {bad or 'none'}")
PY
# The explicit figures for the same points are the transformer rows of the Figures stage.
timeout 240 "$CT" bench train --device $DEV --preset $BASE --bf16 --batch-size 8 --steps 3 \
    --max-seconds 60 --lengths 512,1024,2048,4096 --archs transformer --attention sdpa \
    --out "$OUT/attention-sdpa"
cat "$OUT/attention-sdpa/bench-train.md"

stage "issue 19: the optimiser step alone on CUDA, per-tensor vs multi-tensor (_foreach_) kernels, base"
timeout 120 "$CT" bench optim --device $DEV --preset $BASE --steps 10 --rounds 3
timeout 120 "$CT" bench optim --device $DEV --preset $BASE --steps 10 --rounds 3 --pure-bf16

stage "mixed precision (--bf16, float32 masters) vs pure bf16 weights: base, 128 x 512 / 114 targets"
for arch in transformer lightconv; do
  for mode in --bf16 --pure-bf16; do
    timeout 240 "$CT" bench train-one --arch $arch --preset $BASE --length 512 --targets-length 114 \
        --batch-size $BIG --steps 5 --device $DEV $mode | tee -a "$OUT/precision-step.jsonl"
  done
done

stage "NCCL through torchrun with one rank (WORLD_SIZE=1): 30 steps vs the same run without torchrun"
timeout 180 python3 -m torch.distributed.run --nproc-per-node 1 --master-port 29533 --no-python \
    "$CT" train "${common[@]}" --out "$WORK/nccl" --steps 30
python3 - "$WORK/straight/metrics.jsonl" "$WORK/nccl/metrics.jsonl" "$WORK/nccl/checkpoints/step-00000030/trainer_state.json" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
d = max(abs(x["loss"] - y["loss"]) for x, y in zip(a[:30], b))
print(f"NCCL 1 rank vs no process group, steps 1-30: largest loss difference {d:.3g}; "
      f"world_size in the checkpoint: {json.load(open(sys.argv[3]))['world_size']}")
PY

stage "the demo on CUDA"
timeout 240 "$C" demo --device $DEV --out "$WORK/demo" && cp "$WORK/demo/report.md" "$OUT/demo-report.md"
stage "done"
} 2>&1 | tee "$LOG"
