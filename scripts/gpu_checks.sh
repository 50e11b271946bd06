#!/usr/bin/env bash
# The checks and benchmarks that need a CUDA GPU, in one pass, for a machine that has
# PyTorch 2.11 (the libtorch conveyor-torch runs against) but need not have Rust:
#
#   scripts/gpu_checks.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds release builds of `conveyor` and `conveyor-torch`; OUT_DIR gets log.txt (every
# stage's tables), the bench-train files (JSON, markdown, PNGs: explicit and sdpa series),
# paper-base-step.jsonl (the precision rows too), cuda-graph.jsonl, traingraph-*-metrics.jsonl,
# hf-step.txt and the demo report.
# WHEELS=DIR names transformers' wheels for a machine without network (scripts/gpu_hf.sh).
# Each stage has its own time limit, so one failure does not cost the others. Stages run in
# the order of what is least known; by default issue 19's (gputests ... nccl) and the never-run pyexample (an estimated
# 9 minutes on an H200 from the earlier run's stage times, gpu_hf.sh now at one round; not
# measured: a first call of ~9.5 minutes reaches most of them; on an 80 GB H100 the
# paper-shape rows that do not fit run again at half the batch); ONLY=key,key runs only those (keys in brackets in the log: a second
# call can finish what a first one ran out of time for), e.g. ONLY=figures,sdpa
# scripts/gpu_checks.sh BIN_DIR OUT_DIR; ONLY=all runs every stage.
# DRY_RUN=1 runs the same stages on the CPU with tiny sizes, to check the script itself.
# From a development machine with the device tool: `scripts/device_bin.sh` builds release,
# strips both binaries and the model's unit-test binary into .device/bin and the Python package into .device/python (git-ignored; about
# 59 MB, under the 64 MiB a run may carry) and checks their CUDA graph and NCCL bridges are real; then run
# `scripts/gpu_checks.sh .device/bin $OUT` carrying .device, with a time limit that leaves
# room for a second call (ONLY=...) for the stages the log shows were not reached.
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
DEV=cuda BASE=base BIG=128 LENGTHS=64,128,256,512,1024,2048,4096
if [ "${DRY_RUN:-0}" = 1 ]; then DEV=cpu BASE=tiny BIG=4 LENGTHS=64,128; fi

# Issue 19's stages run by default; the others were measured on an H200 before (docs/bench/h200)
# and run with ONLY=all or by name.
ISSUE19="gputests paperbase traingraph graphs figures sdpa hf optim precision nccl"
# Never run on a GPU yet: the Python package's example trainer (examples/hf_t5_pretrain.py).
UNRUN="pyexample"
KEYS="$ISSUE19 pyexample resume repeat bf16 demo"
DEFAULT="$ISSUE19 $UNRUN"
ONLY=${ONLY:-${DEFAULT// /,}}
for k in ${ONLY//,/ }; do
  [ "$k" = all ] || [[ " $KEYS " == *" $k "* ]] || { echo "ONLY: no stage $k (stages: $KEYS)" >&2; exit 2; }
done
want() { [ "$ONLY" = all ] || [[ ",$ONLY," == *",$1,"* ]]; }
stage() { echo; echo "=== $2 [$1] ($(date +%T), ${SECONDS}s)"; }
{
stage env "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("PyTorch", torch.__version__)'
"$CT" env
"$CT" env | grep -q "cuda graph bridge: built" ||
  echo "WARNING: this build has the stand-in CUDA graph bridge: --cuda-graph and --check-syncs will be refused"

stage setup "fixture tokens for the training stages"
timeout 120 "$C" ingest fixtures/corpus/*.jsonl --vocab fixtures/vocab/fixture.model --out "$WORK/tokens" -q
common=(--data "$WORK/tokens" --arch lightconv --preset tiny --inputs-length 64 --batch-size 16
        --checkpoint-every 30 --device $DEV --seed 0 -q)
# A 60-step run of those settings (and any flags given) into $WORK/NAME, unless a stage
# finished it already.
once() { local name=$1; shift; [ -d "$WORK/$name/checkpoints/step-00000060" ] || timeout 120 "$CT" train "${common[@]}" "$@" --out "$WORK/$name" --steps 60; }
# The same 60 steps taken as 30 and a resume to 60.
halves() {
  local name=$1; shift
  timeout 120 "$CT" train "${common[@]}" "$@" --out "$WORK/$name" --steps 30
  timeout 120 "$CT" train "${common[@]}" "$@" --out "$WORK/$name" --steps 60 --resume
}
GRAPH=--cuda-graph
if [ "$DEV" = cpu ]; then GRAPH=; fi  # a dry run checks the script: both columns eager
# One step measurement at the paper's shape (base, 512 inputs / 114 targets, batch $BIG) with
# the given flags, appended to paper-base-step.jsonl; where the GPU runs out of memory (the
# explicit transformer took 78 GB on the H200 before issue 19: an 80 GB H100 may not hold
# it), the same at half the batch, said so in the log.
# PAPER_BATCH=B starts at batch B instead (the precision stage matches paperbase's batch).
paper_step() {
  local b first=${PAPER_BATCH:-$BIG}
  for b in $first $((first / 2)); do
    timeout 180 "$CT" bench train-one --preset $BASE --length 512 --targets-length 114 --steps 5 \
        --device $DEV --batch-size $b "$@" 2> "$WORK/paper-step.err" | tee -a "$OUT/paper-base-step.jsonl"
    grep -q "out of memory" "$WORK/paper-step.err" || break
    echo "out of GPU memory at batch $b ($*)$([ $b = $first ] && echo ": batch $((first / 2)) instead")"
  done
  tail -n 5 "$WORK/paper-step.err"
}

if want gputests; then
stage gputests "the model crate's unit tests where there is a GPU: CUDA graphs (a captured training step against eager steps), multi-tensor optimiser and RMS norm kernels, peak memory"
# scripts/device_bin.sh puts the test binary beside the others. The tests with a CUDA branch
# (cuda::, optim::, the RMS norm, graph_step::, device::), one at a time: peak-memory
# counters and a capture are process-wide.
if [ -x "$BIN/model-tests" ]; then
  timeout 240 "$BIN/model-tests" --test-threads 1 cuda:: optim:: rms_norm graph_step device:: 2>&1
else
  echo "no $BIN/model-tests (scripts/device_bin.sh puts it there)"
fi
fi

if want paperbase; then
stage paperbase "paper-base cost per step: batch 128 (or 64 where it does not fit) x 512 inputs / 114 targets, base preset, bf16"
for arch in transformer lightconv dynamicconv dilatedconv; do
    paper_step --arch $arch --bf16
done
# The transformer with memory-efficient attention, then also replayed from a CUDA graph:
# which is faster at the paper's shape decides the GPU's attention default.
for g in "" $GRAPH; do
    paper_step --arch transformer --bf16 --attention sdpa $g
done
python3 - "$OUT/paper-base-step.jsonl" <<'PY'
import json, sys
print("| arch | attention | graph | precision | batch | s/step | examples/s | model TFLOP/s | MFU | peak GB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")):
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
    gb = r.get("peak_gpu_allocated_mb")
    prec = "pure bf16" if r.get("pure_bf16") else "bf16 + f32 masters" if r.get("bf16") else "f32"
    print(f"| {r['arch']} | {r['attention']} | {r['cuda_graph']} | {prec} | {r['batch_size']} | {r['seconds_per_step']:.4f} | "
          f"{r['examples_per_s']:.1f} | {r['model_tflops']:.1f} | {mfu} | {'-' if gb is None else f'{gb / 1024:.1f}'} |")
PY
fi

if want traingraph; then
stage traingraph "issue 19: train --cuda-graph: the same steps as eager (--deterministic), exact resume, and batch-8 step time"
# Batch 8 at inputs length 64: the fixture's 24 examples make full batches only, so every
# step after the warm-up replays. A dry run has no graph: its "graph" runs are eager.
tg=(--data "$WORK/tokens" --arch lightconv --preset tiny --inputs-length 64 --batch-size 8
    --checkpoint-every 30 --device $DEV --seed 0 --deterministic -q --json)
timeout 120 "$CT" train "${tg[@]}" --out "$WORK/tg-eager" --steps 60 > "$WORK/tg-eager.json"
timeout 120 "$CT" train "${tg[@]}" $GRAPH --out "$WORK/tg-graph" --steps 60 > "$WORK/tg-graph.json"
timeout 120 "$CT" train "${tg[@]}" $GRAPH --out "$WORK/tg-resumed" --steps 30 > /dev/null
timeout 120 "$CT" train "${tg[@]}" $GRAPH --out "$WORK/tg-resumed" --steps 60 --resume > "$WORK/tg-resumed.json"
# Item 2: no step waits for the GPU (libtorch's sync debug mode at "error" from step 5 on),
# eager, accumulating, and replayed; bf16 transformer. A dry run (CPU) runs them unchecked.
SYNCS=--check-syncs
if [ "$DEV" = cpu ]; then SYNCS=; fi
for v in "eager:" "accumulate:--accumulate 2" "graph:$GRAPH"; do
  timeout 120 "$CT" train --data "$WORK/tokens" --arch transformer --preset tiny --inputs-length 64 \
      --batch-size 8 --steps 24 --checkpoint-every 24 --device $DEV --bf16 --seed 0 -q --json $SYNCS \
      ${v#*:} --out "$WORK/tg-syncs-${v%%:*}" > "$WORK/tg-syncs-${v%%:*}.json" 2> "$WORK/tg-syncs-${v%%:*}.err"
  rc=$?
  echo "check-syncs ${v%%:*}: exit $rc $(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print("steps checked:", d.get("sync_checked_steps"), "replayed:", d.get("replayed_steps"))' "$WORK/tg-syncs-${v%%:*}.json" 2>/dev/null) $(tail -c 600 "$WORK/tg-syncs-${v%%:*}.err")"
done
# Step time: the base transformer, bf16, batch 8, on the fixture corpus copied 20 times
# (~32k tokens: full batches but for each epoch's last).
mkdir -p "$WORK/corpus20"
for i in $(seq 20); do for f in fixtures/corpus/*.jsonl; do cp "$f" "$WORK/corpus20/$i-${f##*/}"; done; done
timeout 120 "$C" ingest "$WORK"/corpus20/*.jsonl --vocab fixtures/vocab/fixture.model --out "$WORK/tokens20" -q
for L in 64 256; do
  for g in eager graph; do
    flag=; [ $g = graph ] && flag=$GRAPH
    timeout 120 "$CT" train --data "$WORK/tokens20" --arch transformer --preset $BASE --batch-size 8 \
        --inputs-length $L --steps 64 --checkpoint-every 64 --device $DEV --bf16 --seed 0 -q --json \
        $flag --out "$WORK/tg-speed-$L-$g" > "$WORK/tg-speed-$L-$g.json"
  done
done
python3 - "$WORK" <<'PY'
import json, sys
W = sys.argv[1]
def lines(r):
    return list(map(json.loads, open(f"{W}/{r}/metrics.jsonl")))
def replayed(r):
    try:
        return json.load(open(f"{W}/{r}.json")).get("replayed_steps", 0)
    except Exception as e:
        return repr(e)
for a, b, first in [("tg-eager", "tg-graph", 1), ("tg-graph", "tg-resumed", 31)]:
    try:
        la = {m["step"]: m["loss"] for m in lines(a)}
        lb = {m["step"]: m["loss"] for m in lines(b)}
        d = max(abs(la[s] - lb[s]) for s in range(first, 61))
        print(f"{a} vs {b}, steps {first}-60: largest loss difference {d:.3g} (0 = bit-exact); first differing step "
              f"{next((s for s in range(first, 61) if la[s] != lb[s]), None)}; steps replayed: {replayed(a)} / {replayed(b)}")
    except Exception as e:
        print(f"{a} vs {b}: {e!r}")
print("| inputs length | eager s/step | graph s/step | speed-up | steps replayed | eager loss 64 | graph loss 64 |")
print("|---|---|---|---|---|---|---|")
for L in (64, 256):
    try:
        e, g = lines(f"tg-speed-{L}-eager"), lines(f"tg-speed-{L}-graph")
        # Steps 33-64: two read-back windows of 16 (each line carries its window's time),
        # past the warm-up and the capture; both runs read the same batches.
        def per_step(r):
            at = {m["step"]: m for m in r}
            return (at[64]["elapsed_s"] - at[32]["elapsed_s"]) / 32
        print(f"| {L} | {per_step(e):.4f} | {per_step(g):.4f} | {per_step(e) / per_step(g):.2f}x | {replayed(f'tg-speed-{L}-graph')} | "
              f"{e[-1]['loss']:.4f} | {g[-1]['loss']:.4f} |")
    except Exception as ex:
        print(f"| {L} | {ex!r} |")
PY
for r in tg-eager tg-graph tg-resumed tg-speed-64-eager tg-speed-64-graph tg-speed-256-eager tg-speed-256-graph; do
  [ -f "$WORK/$r/metrics.jsonl" ] && cp "$WORK/$r/metrics.jsonl" "$OUT/traingraph-$r-metrics.jsonl"
done
fi

if want graphs; then
stage graphs "issue 19: CUDA graphs: batch-8 step time by length, eager beside the step replayed from a graph (base, bf16)"
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
fi

if want figures; then
stage figures "Figures 1 and 2 on CUDA: base preset, bf16, batch 8, every architecture with explicit and with sdpa attention"
# Replayed from CUDA graphs (no launch overhead flattening Figure 1) once the graphs stage
# has shown a replayed step in this run; eager otherwise.
FIGGRAPH=
grep -q '"cuda_graph":true' "$OUT/cuda-graph.jsonl" 2>/dev/null && FIGGRAPH=$GRAPH
echo "figures with ${FIGGRAPH:-eager steps}"
timeout 420 "$CT" bench train --device $DEV --preset $BASE --bf16 --batch-size 8 --steps 3 \
    --max-seconds 60 --lengths $LENGTHS --attention explicit,sdpa $FIGGRAPH --out "$OUT"
cat "$OUT/bench-train.md"
fi

if want sdpa; then
stage sdpa "issue 19: sdpa attention on CUDA: losses beside explicit without dropout (inputs 576: length mod 128 = 64)"
# Dropout off: the two paths draw different random streams, so only without it do their
# losses measure the kernel (CUDA's memory-efficient one, its bias gradient included).
echo '{"dropout": 0, "weight_dropout": 0}' > "$WORK/explicit.json"
echo '{"dropout": 0, "weight_dropout": 0, "attention": "sdpa"}' > "$WORK/sdpa.json"
att=(--data "$WORK/tokens" --arch transformer --preset tiny --inputs-length 576 --batch-size 8
     --checkpoint-every 30 --device $DEV --seed 0 --steps 30 -q)
for p in f32 bf16; do
  flag=; [ $p = bf16 ] && flag=--bf16
  for a in explicit sdpa; do
    timeout 120 "$CT" train "${att[@]}" $flag --config "$WORK/$a.json" --out "$WORK/att-$a-$p"
  done
done
python3 - "$WORK" <<'PY'
import json, sys
for p in ("f32", "bf16"):
    try:
        a, b = ([json.loads(l)["loss"] for l in open(f"{sys.argv[1]}/att-{x}-{p}/metrics.jsonl")] for x in ("explicit", "sdpa"))
        d = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        # A run that diverged stops before writing the step: fewer than 30 lines.
        print(f"explicit vs sdpa, {p}, no dropout: steps {len(a)} / {len(b)} (30 each expected); largest relative "
              f"loss difference {d:.3g}; step {len(b)} {a[-1]:.5f} / {b[-1]:.5f}")
    except Exception as e:
        print(f"explicit vs sdpa, {p}: {e!r}")
PY
# Speed and memory with sdpa, by length: the Figures stage's "(sdpa)" series.
fi

if want hf; then
stage hf "one T5 step: conveyor, the same model in PyTorch, transformers' T5 (scripts/gpu_hf.sh)"
timeout 500 scripts/gpu_hf.sh "$BIN" "$OUT" ${WHEELS:-}
fi

if want optim; then
stage optim "issue 19: the optimiser step alone on CUDA, per-tensor vs multi-tensor (_foreach_) kernels, base"
timeout 120 "$CT" bench optim --device $DEV --preset $BASE --steps 10 --rounds 3
timeout 120 "$CT" bench optim --device $DEV --preset $BASE --steps 10 --rounds 3 --pure-bf16
fi

if want precision; then
stage precision "mixed precision (--bf16, float32 masters) vs pure bf16 weights: base, 512 / 114 targets, batch 128 (or 64 where it does not fit)"
# The --bf16 rows are paperbase's (the same command), run here only when that stage was not;
# pure bf16 runs at the batch the --bf16 row ran at (half of 128 where 128 did not fit).
bf16_batch() {
  python3 - "$OUT/paper-base-step.jsonl" "$1" <<'PY' 2>/dev/null
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
b = [r["batch_size"] for r in rows if r["arch"] == sys.argv[2] and r["attention"] == "explicit"
     and r.get("bf16") and not r["cuda_graph"]]
print(b[-1] if b else "")
PY
}
for arch in transformer lightconv; do
  b=$(bf16_batch $arch)
  if [ -z "$b" ]; then
    paper_step --arch $arch --bf16
    b=$(bf16_batch $arch)
  fi
  if [ -n "$b" ]; then
    PAPER_BATCH=$b paper_step --arch $arch --pure-bf16
  else
    echo "no --bf16 row for $arch: pure bf16 not measured either (nothing to set it beside)"
  fi
done
# Both precisions side by side, from paper-base-step.jsonl (the paperbase stage's rows too).
python3 - "$OUT/paper-base-step.jsonl" <<'PY'
import json, sys
print("| arch | precision | batch | s/step | peak GB |")
print("|---|---|---|---|---|")
for r in (json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")):
    if (r["arch"] not in ("transformer", "lightconv") or r["attention"] != "explicit" or r["cuda_graph"]
            or not (r.get("bf16") or r.get("pure_bf16"))):
        continue
    gb = r.get("peak_gpu_allocated_mb")
    print(f"| {r['arch']} | {'pure bf16' if r.get('pure_bf16') else 'bf16 + f32 masters'} | {r['batch_size']} | "
          f"{r['seconds_per_step']:.4f} | {'-' if gb is None else f'{gb / 1024:.1f}'} |")
PY
fi

if want nccl; then
stage nccl "NCCL through torchrun with one rank (WORLD_SIZE=1): 30 steps vs the same run without torchrun"
timeout 180 python3 -m torch.distributed.run --nproc-per-node 1 --master-port 29533 --no-python \
    "$CT" train "${common[@]}" --out "$WORK/nccl" --steps 30
once straight
python3 - "$WORK/straight/metrics.jsonl" "$WORK/nccl/metrics.jsonl" "$WORK/nccl/checkpoints/step-00000030/trainer_state.json" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
d = max(abs(x["loss"] - y["loss"]) for x, y in zip(a[:30], b))
print(f"NCCL 1 rank vs no process group, steps 1-30: largest loss difference {d:.3g}; "
      f"world_size in the checkpoint: {json.load(open(sys.argv[3]))['world_size']}")
PY
fi

if want pyexample; then
stage pyexample "the Python package on CUDA: examples/hf_t5_pretrain.py (transformers' T5 fed by conveyor.Loader), 12 steps straight vs 6 + --resume to 12"
# scripts/device_bin.sh copies the installed package (conveyor/, its native module stripped)
# beside BIN; transformers is the device's own. One GPU cannot hold two NCCL ranks: this runs
# one process, the example's CUDA path (its CUDA random state saved and restored on resume);
# the two-rank path is tested on the CPU with Gloo (python/tests/test_example_trainer.py).
PY_PKG=$(cd "$BIN/.." && pwd)/python
ex=(examples/hf_t5_pretrain.py --tokens "$WORK/tokens" --inputs-length 64 --batch-size 8 --device $DEV --save-every 6)
if PYTHONPATH=$PY_PKG python3 -c 'import conveyor, transformers; print("conveyor", conveyor.__file__, "transformers", transformers.__version__)'; then
  PYTHONPATH=$PY_PKG timeout 120 python3 "${ex[@]}" --out "$WORK/py-straight" --steps 12
  PYTHONPATH=$PY_PKG timeout 120 python3 "${ex[@]}" --out "$WORK/py-resumed" --steps 6
  PYTHONPATH=$PY_PKG timeout 120 python3 "${ex[@]}" --out "$WORK/py-resumed" --steps 12 --resume
  python3 - "$WORK/py-straight/log.jsonl" "$WORK/py-resumed/log.jsonl" <<'PY'
import json, sys
try:
    a, b = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:])
    d = max(abs(x - y) for x, y in zip(a, b))
    print(f"straight vs resumed at 6: steps {len(a)} / {len(b)} (12 each expected); largest loss difference "
          f"{d:.3g} (0 = bit-exact; dropout 0.1 on both); step 12 {a[-1]:.5f} / {b[-1]:.5f}")
except Exception as e:
    print(f"straight vs resumed: {e!r}")
PY
else
  echo "no conveyor package beside BIN or no transformers here: scripts/device_bin.sh copies the package"
fi
fi

if want resume; then
stage resume "exact resume on CUDA: 60 steps straight vs 30 + resume to 60"
once straight
halves resumed
python3 - "$WORK/straight/metrics.jsonl" "$WORK/resumed/metrics.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
la = {m["step"]: m["loss"] for m in a}
lb = {m["step"]: m["loss"] for m in b}
diff = max(abs(la[s] - lb[s]) for s in range(31, 61))
print(f"steps 31-60: largest loss difference {diff:.3g} (0 = bit-exact); "
      f"step 60 losses {la[60]:.6f} / {lb[60]:.6f}; peak GPU MB {a[-1].get('peak_gpu_mb')}")
PY
fi

if want repeat; then
stage repeat "repeatability on CUDA: the same 60 steps twice, then with --deterministic (twice + resumed + read back every step)"
once straight
timeout 120 "$CT" train "${common[@]}" --out "$WORK/again" --steps 60
once det1 --deterministic
timeout 120 "$CT" train "${common[@]}" --deterministic --out "$WORK/det2" --steps 60
halves det-resumed --deterministic
# Issue 19: figures read back every step instead of every 16 (CUDA's default window).
timeout 120 "$CT" train "${common[@]}" --deterministic --sync-every 1 --out "$WORK/det-sync1" --steps 60
python3 - "$WORK" <<'PY'
import json, sys
def losses(r):
    return {m["step"]: m["loss"] for m in map(json.loads, open(f"{sys.argv[1]}/{r}/metrics.jsonl"))}
def cmp(a, b, first):
    la, lb = losses(a), losses(b)
    d = max(abs(la[s] - lb[s]) for s in range(first, 61))
    print(f"{a} vs {b}, steps {first}-60: largest difference {d:.3g}; first differing step "
          f"{next((s for s in range(first, 61) if la[s] != lb[s]), None)}")
for a, b, f in [("straight", "again", 1), ("det1", "det2", 1), ("det1", "det-resumed", 31), ("straight", "det1", 1), ("det1", "det-sync1", 1)]:
    try:
        cmp(a, b, f)
    except Exception as e:
        print(f"{a} vs {b}: {e!r}")
PY
fi

if want bf16; then
stage bf16 "bf16 training on CUDA (transformer tiny, 50 steps)"
timeout 120 "$CT" train --data "$WORK/tokens" --arch transformer --preset tiny --inputs-length 64 \
    --batch-size 16 --steps 50 --checkpoint-every 50 --device $DEV --bf16 --out "$WORK/bf16" --json
fi

if want demo; then
stage demo "the demo on CUDA"
timeout 240 "$C" demo --device $DEV --out "$WORK/demo" && cp "$WORK/demo/report.md" "$OUT/demo-report.md"
fi

stage done "done"
} 2>&1 | tee -a "$LOG"
