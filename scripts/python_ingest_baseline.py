#!/usr/bin/env python3
"""The plain Python ingest that conveyor's benchmark compares against: for each input file
(json.gz lines), json.loads + SentencePiece batch encode + pyarrow Parquet (zstd), one
process per file, N processes. Also reports SentencePiece's own batch-encode speed on one
core. Prints one JSON object.

usage: python_ingest_baseline.py VOCAB OUT_DIR FILE... [--procs 2]
"""
import argparse, gzip, json, multiprocessing as mp, os, time

import pyarrow as pa
import pyarrow.parquet as pq
import sentencepiece as spm


def ingest_one(args):
    vocab, path, out_dir = args
    sp = spm.SentencePieceProcessor(model_file=vocab)
    texts, urls = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts.append(d["text"])
            urls.append(d.get("url"))
    ids = sp.encode(texts)
    table = pa.table({"tokens": pa.array(ids, type=pa.list_(pa.uint16())), "url": urls})
    pq.write_table(table, os.path.join(out_dir, os.path.basename(path) + ".parquet"), compression="zstd")
    return sum(len(t.encode("utf-8")) for t in texts), sum(len(x) for x in ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    with mp.Pool(a.procs) as pool:
        res = pool.map(ingest_one, [(a.vocab, f, a.out) for f in a.files])
    secs = time.perf_counter() - t0
    text_bytes = sum(r[0] for r in res)
    tokens = sum(r[1] for r in res)
    # SentencePiece's own encode speed, one core, on the first file's text.
    sp = spm.SentencePieceProcessor(model_file=a.vocab)
    with gzip.open(a.files[0], "rt", encoding="utf-8") as f:
        texts = [json.loads(l)["text"] for l in f]
    t1 = time.perf_counter()
    sp.encode(texts)
    enc_secs = time.perf_counter() - t1
    enc_bytes = sum(len(t.encode("utf-8")) for t in texts)
    print(json.dumps({
        "pipeline_mb_s": text_bytes / 1e6 / secs,
        "pipeline_tokens_s": tokens / secs,
        "pipeline_seconds": secs,
        "text_bytes": text_bytes,
        "tokens": tokens,
        "spm_python_encode_mb_s_1core": enc_bytes / 1e6 / enc_secs,
        "sentencepiece_version": spm.__version__,
    }))


if __name__ == "__main__":
    main()
