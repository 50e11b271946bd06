#!/usr/bin/env python3
"""The Python package against what Python users have, side by side in one run (each
figure but datasets' first load the median of three runs):

  - conveyor.Tokenizer.encode_batch vs sentencepiece's encode (a batch, num_threads), same
    threads, on a corpus of C4-format json.gz shards; the ids are checked identical;
  - conveyor.Loader vs Hugging Face datasets (Parquet, with_format("numpy"), batches padded
    in numpy) reading the same example shards, batch 32;
  - conveyor.Loader from token shards with span corruption on the fly: tokens per second and
    per CPU second.

    python scripts/bench_python.py --corpus DIR --vocab spiece.model --conveyor BIN --work DIR

DIR holds the corpus (e.g. ../shared/tools/make-bench-corpus DIR --mb 64). Prints a markdown
table and writes WORK/bench-python.json.
"""

import argparse
import glob
import gzip
import json
import os
import subprocess
import time

import numpy as np
import sentencepiece as spm

import conveyor


def texts_of(corpus):
    out = []
    files = [corpus] if os.path.isfile(corpus) else sorted(glob.glob(os.path.join(corpus, "*.json.gz")))
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as g:
            out += [json.loads(line)["text"] for line in g]
    return out


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    r = fn()
    return r, time.perf_counter() - t0, time.process_time() - c0


REPEATS = 3


def median_run(fn, setup=lambda: None):
    """fn(setup())'s result and its median wall time over REPEATS runs (the machine is
    noisy); setup is not timed."""
    runs = []
    for _ in range(REPEATS):
        arg = setup()
        runs.append(timed(lambda: fn(arg)))
    return runs[0][0], sorted(r[1] for r in runs)[REPEATS // 2]


def tokenizer(texts, vocab, threads):
    ref = spm.SentencePieceProcessor(model_file=vocab)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = []
    for n in threads:
        # A fresh tokenizer per run: its word cache starts empty, as in one pass over a corpus.
        a, ta = median_run(lambda tok: tok.encode_batch(texts, threads=n),
                           lambda: conveyor.Tokenizer.from_file(vocab))
        b, tb = median_run(lambda _: ref.encode(texts, num_threads=n))
        same = all(x.tolist() == y for x, y in zip(a, b))
        rows.append({"threads": n, "mb": mb, "conveyor_s": ta, "sentencepiece_s": tb,
                     "conveyor_mb_s": mb / ta, "sentencepiece_mb_s": mb / tb,
                     "speedup": tb / ta, "identical_ids": same,
                     "tokens": int(sum(len(x) for x in a))})
    return rows


def conveyor_epoch(path, **kw):
    batches = tokens = 0
    for b in conveyor.Loader(path, 32, epochs=1, **kw):
        batches += 1
        tokens += int(b["inputs_lengths"].sum() + b["targets_lengths"].sum())
    return batches, tokens


def hf_epoch(shards, inputs_length, targets_length):
    import datasets

    ds = datasets.load_dataset("parquet", data_files=shards, split="train").with_format("numpy")
    batches = tokens = 0
    for b in ds.iter(batch_size=32):
        n = len(b["inputs"])
        x = np.zeros((n, inputs_length), np.int32)
        y = np.zeros((n, targets_length), np.int32)
        for i, (a, t) in enumerate(zip(b["inputs"], b["targets"])):
            x[i, : len(a)] = a
            y[i, : len(t)] = t
            tokens += len(a) + len(t)
        batches += 1
    return batches, tokens


def loaders(bin_, corpus, vocab, work):
    tokens_dir, ex_dir = os.path.join(work, "tokens"), os.path.join(work, "examples")
    if not os.path.exists(os.path.join(tokens_dir, "manifest.json")):
        subprocess.run([bin_, "ingest", corpus, "--vocab", vocab, "--out", tokens_dir, "-q"], check=True)
    if not os.path.exists(os.path.join(ex_dir, "manifest.json")):
        subprocess.run([bin_, "corrupt", tokens_dir, "--out", ex_dir, "--inputs-length", "512", "-q"], check=True)
    m = conveyor.read_manifest(ex_dir)
    shards = [os.path.join(ex_dir, s["file"]) for s in m["shards"]]
    lengths = m["settings"]
    import datasets  # noqa: F401  (imported before timing)

    rows = []

    def row(name, fn, **extra):
        runs = sorted((timed(fn) for _ in range(REPEATS)), key=lambda r: r[1])
        (b, t), s, c = runs[REPEATS // 2]
        rows.append({"reader": name, "batches": b, "tokens": t, "s": s, "cpu_s": c, **extra})

    row("conveyor.Loader, example shards", lambda: conveyor_epoch(ex_dir, seed=0))
    # The first load writes datasets' Arrow cache; the median of the runs after it is the
    # cached figure.
    first = timed(lambda: hf_epoch(shards, lengths["inputs_length"], lengths["targets_length"]))
    rows.append({"reader": "HF datasets (Parquet, numpy, padded in Python), first load", "batches": first[0][0],
                 "tokens": first[0][1], "s": first[1], "cpu_s": first[2]})
    row("HF datasets, cached", lambda: hf_epoch(shards, lengths["inputs_length"], lengths["targets_length"]))
    row("conveyor.Loader, token shards, span corruption on the fly",
        lambda: conveyor_epoch(tokens_dir, inputs_length=512, seed=0))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--conveyor", required=True, help="the conveyor binary")
    p.add_argument("--work", required=True)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--unique", help="also encode this json.gz file of distinct documents (the bench corpus repeats "
                   "text, which favours conveyor's word cache)")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    texts = texts_of(args.corpus)
    threads = [int(t) for t in args.threads.split(",")]
    tok = tokenizer(texts, args.vocab, threads)
    for r in tok:
        r["corpus"] = os.path.basename(args.corpus.rstrip("/"))
    if args.unique:
        for r in tokenizer(texts_of(args.unique), args.vocab, threads):
            r["corpus"] = os.path.basename(args.unique)
            tok.append(r)
    load = loaders(args.conveyor, args.corpus, args.vocab, args.work)
    print("| corpus | threads | MB | conveyor MB/s | sentencepiece MB/s | speed-up | identical ids |")
    print("|---|---|---|---|---|---|---|")
    for r in tok:
        print(f"| {r['corpus']} | {r['threads']} | {r['mb']:.1f} | {r['conveyor_mb_s']:.2f} | {r['sentencepiece_mb_s']:.2f} "
              f"| {r['speedup']:.2f}x | {r['identical_ids']} |")
    print("\n| reader (batch 32) | batches | batches/s | M tokens/s | M tokens per CPU s |")
    print("|---|---|---|---|---|")
    for r in load:
        print(f"| {r['reader']} | {r['batches']} | {r['batches'] / r['s']:.0f} | {r['tokens'] / r['s'] / 1e6:.2f} "
              f"| {r['tokens'] / r['cpu_s'] / 1e6:.2f} |")
    with open(os.path.join(args.work, "bench-python.json"), "w") as f:
        json.dump({"tokenizer": tok, "loader": load}, f, indent=1)


if __name__ == "__main__":
    main()
