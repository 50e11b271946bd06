"""Encoding speed with many user-defined symbols: conveyor's Python Tokenizer beside the
sentencepiece library, one core, on the C4 sample's first 300 documents, for vocabularies
trained on them with 0, 20,000 and 200,000 user-defined symbols (`<u0>`, `<u1>`, ...).
Checks the ids are equal, prints seconds per pass (best of 3).

    python scripts/bench_user_symbols.py [WORK_DIR]     (make python first)
"""
import gzip
import json
import pathlib
import sys
import tempfile
import time

import sentencepiece as spm

import conveyor

C4 = pathlib.Path(__file__).resolve().parents[1] / "../shared/data/c4/c4-train.00000-of-01024.first600.json.gz"


def best_of(n, f):
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    with gzip.open(C4, "rt") as f:
        docs = [json.loads(line)["text"] for line in f][:300]
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(docs))
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"{len(docs)} documents, {mb:.2f} MB; seconds per pass, one core, best of 3")
    print("| user-defined symbols | sentencepiece | conveyor | same ids |")
    print("|---|---|---|---|")
    for n in [0, 20_000, 200_000]:
        prefix = work / f"user{n}"
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), vocab_size=2000 + n,
            user_defined_symbols=[f"<u{i}>" for i in range(n)], hard_vocab_limit=False,
            minloglevel=2)
        model = f"{prefix}.model"
        sp = spm.SentencePieceProcessor(model_file=model)
        ours = conveyor.Tokenizer.from_file(model)
        same = [sp.encode(d) for d in docs] == [list(ours.encode(d)) for d in docs]
        t_sp = best_of(3, lambda: [sp.encode(d) for d in docs])
        t_ours = best_of(3, lambda: [ours.encode(d) for d in docs])
        print(f"| {n:,} | {t_sp:.3f} | {t_ours:.3f} | {same} |")


if __name__ == "__main__":
    main()
