"""The baseline for `conveyor bench corrupt`: T5 span corruption written the way one would in
numpy (vectorised per example), on conveyor token shards, one process.

Same algorithm as conveyor: groups of 128 documents concatenated, pieces of tokens_length,
random-spans noise mask (uniform compositions, float32 round-half-to-even counts), sentinels
from vocab_size - 1, EOS after trimming; written as Parquet (inputs, targets) with pyarrow.
Prints one JSON object: input tokens, seconds, tokens/s end to end and for masking alone.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def helper(inputs_length, density, mean):
    def lengths(n):
        noise = int(round(n * density))
        spans = int(round(noise / mean))
        return n - noise + spans + 1, noise + spans + 1

    n = inputs_length - 1
    while lengths(n + 1)[0] <= inputs_length:
        n += 1
    return (n,) + lengths(n)


def segmentation(rng, total, parts):
    if parts >= total:
        return np.concatenate([np.ones(total, np.int64), np.zeros(parts - total, np.int64)])
    cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(rng, length, density, mean):
    lifted = max(length, 2)
    noise = int(np.round(np.float32(lifted) * np.float32(density)))
    noise = min(max(noise, 1), lifted - 1)
    spans = max(int(np.round(np.float32(noise) / np.float32(mean))), 1)
    noise_lens = segmentation(rng, noise, spans)
    keep_lens = segmentation(rng, lifted - noise, spans)
    interleaved = np.stack([keep_lens, noise_lens], axis=1).reshape(-1)
    kinds = np.tile(np.array([False, True]), spans)
    return np.repeat(kinds, interleaved)[:length]


def to_sentinels(tokens, mask, vocab_size):
    prev = np.concatenate([[False], mask[:-1]])
    first = mask & ~prev
    later = mask & prev
    sentinel = vocab_size - np.cumsum(first)
    out = np.where(first, sentinel, tokens)
    return out[~later]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokens")
    ap.add_argument("out")
    ap.add_argument("--inputs-length", type=int, default=512)
    ap.add_argument("--density", type=float, default=0.15)
    ap.add_argument("--mean", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    manifest = json.load(open(os.path.join(a.tokens, "manifest.json")))
    vocab_size = manifest["vocab"]["size"] + 100
    eos = manifest["vocab"]["eos_id"]
    tokens_length, inputs_length, targets_length = helper(a.inputs_length, a.density, a.mean)
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    total_tokens = 0
    mask_seconds = 0.0
    t0 = time.perf_counter()
    for shard in manifest["shards"]:
        col = pq.read_table(os.path.join(a.tokens, shard["file"]), columns=["tokens"])["tokens"]
        col = col.combine_chunks()
        values = col.values.to_numpy().astype(np.int64)
        offsets = col.offsets.to_numpy()
        total_tokens += len(values)
        inputs, targets = [], []
        t1 = time.perf_counter()
        n_docs = len(offsets) - 1
        for g in range(0, n_docs, 128):
            docs = []
            for d in range(g, min(g + 128, n_docs)):
                doc = values[offsets[d]:offsets[d + 1]]
                if len(doc) > 65536:
                    k = rng.integers(0, (len(doc) + 65535) // 65536)
                    doc = doc[k * 65536:(k + 1) * 65536]
                docs.append(doc)
            group = np.concatenate(docs)
            for start in range(0, len(group), tokens_length):
                piece = group[start:start + tokens_length]
                mask = noise_mask(rng, len(piece), a.density, a.mean)
                inp = to_sentinels(piece, mask, vocab_size)[: inputs_length - 1]
                tgt = to_sentinels(piece, ~mask, vocab_size)[: targets_length - 1]
                inputs.append(np.append(inp, eos).astype(np.uint16))
                targets.append(np.append(tgt, eos).astype(np.uint16))
        mask_seconds += time.perf_counter() - t1
        table = pa.table(
            {
                "inputs": pa.array(inputs, type=pa.list_(pa.uint16())),
                "targets": pa.array(targets, type=pa.list_(pa.uint16())),
            }
        )
        pq.write_table(table, os.path.join(a.out, shard["file"]), compression="zstd")
    secs = time.perf_counter() - t0
    json.dump(
        {
            "input_tokens": total_tokens,
            "seconds": secs,
            "tokens_per_s": total_tokens / secs,
            "masking_tokens_per_s": total_tokens / mask_seconds,
            "numpy": np.__version__,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
