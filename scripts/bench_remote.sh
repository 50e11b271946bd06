#!/usr/bin/env bash
# Remote-corpus benchmark: ingest of the same C4-like corpus from local files, from S3 (moto's
# server on loopback) into a local folder, and from S3 into S3, side by side in one run.
# moto is a Python server, so the S3 figures are a floor on what a real store gives; the
# point is the overhead of the remote reader and the upload against the local read.
# Usage: scripts/bench_remote.sh [CONVEYOR_BIN] [MB]   (needs `make release` and scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release/conveyor}"
mb="${2:-64}"
venv="$(scripts/setup.sh)"
vocab=../shared/data/spiece/t5-spiece.model
work=target/bench
corpus="$work/corpus-${mb}mb"
# `bench ingest` writes the corpus (C4 sample documents repeated to MB of text) if missing.
[ -f "$corpus/.complete" ] || "$bin" bench ingest --mb "$mb" --vocab "$vocab" >/dev/null
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
S3_UPLOAD_PART_MIN_SIZE=5242880 "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null; rm -rf "$work/remote-out"' EXIT
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 CONVEYOR_STAGE="$work/remote-out/stage"
for _ in $(seq 100); do "$venv/bin/python" -c "import socket; socket.create_connection(('127.0.0.1',$port))" 2>/dev/null && break; sleep 0.2; done
"$venv/bin/python" - "$AWS_ENDPOINT" "$corpus" <<'EOF'
import sys, os, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
s3.create_bucket(Bucket="bench")
for f in sorted(os.listdir(sys.argv[2])):
    if f.endswith(".json.gz"):
        s3.upload_file(os.path.join(sys.argv[2], f), "bench", "corpus/" + f)
EOF
text_mb=$(python3 -c "import gzip,glob; print(sum(len(gzip.open(f).read()) for f in glob.glob('$corpus/*.json.gz'))/1e6)")
run() { # name, input, out
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" ingest "$2" --vocab "$vocab" --out "$3" --threads 2 -q --overwrite >/dev/null
  t1=$(date +%s.%N)
  python3 -c "t=$t1-$t0; print(f'| $1 | {t:.2f} | {$text_mb/t:.1f} |')"
}
echo "ingest of $text_mb MB of text (8 json.gz files), 2 threads, $(nproc) cores"
echo "| input -> output | seconds | MB/s of text |"
echo "|---|---|---|"
run "local files -> local folder" "$corpus" "$work/remote-out/local"
run "s3:// (moto) -> local folder" "s3://bench/corpus/" "$work/remote-out/from-s3"
run "s3:// (moto) -> s3:// (moto)" "s3://bench/corpus/" "s3://bench/tokens"
cmp <(cd "$work/remote-out/local" && cat ./*.parquet | sha256sum) \
    <(cd "$work/remote-out/from-s3" && cat ./*.parquet | sha256sum) && echo "(same shards from both reads)"
