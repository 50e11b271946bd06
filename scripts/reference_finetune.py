#!/usr/bin/env python3
"""The reference for a conveyor fine-tuning cell: transformers' T5ForConditionalGeneration
trained on the same tokenized examples (read from conveyor's example shards), with the same
model config, optimiser (Adafactor, parameter scaling, constant learning rate, no warm-up),
batch size and steps, then scored by greedy decoding on the same dev examples.

    python scripts/reference_finetune.py --train STUDY/tasks/sst2/train \
        --dev STUDY/tasks/sst2/dev --hf-config HF_DIR/config.json \
        --lr 1e-3 --steps 1200 --batch-size 32 --seeds 0,1,2 --out reference.json \
        [--dev-limit N] [--conveyor STUDY/runs/sst2-transformer-scratch-lr0.001-s{seed}]

HF_DIR comes from `conveyor model export-hf` of any checkpoint of the conveyor cell (only its
config is used; the weights are initialised afresh by transformers under each seed). With
--conveyor (a run folder pattern with {seed}), the conveyor cell's dev accuracy is read from
its evaluation and printed beside the reference's. A study with a [reference] section runs
this script itself and puts the two side by side in its report.

Batches are padded to the prepared feature lengths and decoding runs up to the targets
length, as conveyor does. What differs: a prediction is right when its ids up to the first
</s> equal the target's (conveyor compares the decoded texts; for these label sets the two
agree); the data order is each seed's own permutation per epoch with the last short batch
dropped (conveyor shuffles within windows of 10,000 and keeps it); the random streams
(initialisation, dropout) are torch's. So single seeds differ and the comparison is between
means over seeds.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.optimization import Adafactor


def proportional(sizes, n):
    """How many rows a limit of n takes from shards of `sizes`, as `conveyor eval --limit`
    takes them: shares in proportion to size, largest remainders first, ties in shard order."""
    total = sum(sizes)
    if n >= total:
        return list(sizes)
    take = [s * n // total for s in sizes]
    order = sorted(range(len(sizes)), key=lambda i: -(sizes[i] * n % total))
    for i in order[: n - sum(take)]:
        take[i] += 1
    return take


def read_examples(folder, limit=0):
    """(inputs, targets, (inputs_length, targets_length)): the id lists of every shard its
    manifest lists, in order (with `limit`, the first rows of each shard in proportion to its
    size, the rows conveyor's evaluation takes), and the feature lengths they were prepared
    with."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    settings = manifest["settings"]
    lengths = (settings["inputs_length"], settings["targets_length"])
    shards = []
    for shard in manifest["shards"]:
        name = shard["file"]
        if os.path.basename(name) != name:
            sys.exit(f"{folder}/manifest.json: shard name {name!r} is not a plain file name")
        table = pq.read_table(os.path.join(folder, name), columns=["inputs", "targets"])
        shards.append(([list(x) for x in table.column("inputs").to_pylist()],
                       [list(x) for x in table.column("targets").to_pylist()]))
    take = proportional([len(i) for i, _ in shards], limit) if limit else [len(i) for i, _ in shards]
    inputs = [x for (i, _), k in zip(shards, take) for x in i[:k]]
    targets = [y for (_, t), k in zip(shards, take) for y in t[:k]]
    if not inputs:
        sys.exit(f"{folder}: no examples")
    return inputs, targets, lengths


def pad(rows, width, pad_id=0):
    """Rows padded to `width` (the prepared feature length, as conveyor pads them)."""
    out = np.full((len(rows), width), pad_id, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def batches(n, batch_size, seed):
    """Endless batches of indices: a fresh seeded permutation each epoch."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def train(cfg, data, args, seed, untied):
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(cfg)
    if untied and model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        # transformers 5 ties every T5's head to the embedding (a config that says untied
        # only turns the logits scaling off): an untied cell gets a head of its own,
        # initialised as transformers 4 initialises one.
        head = torch.empty_like(model.shared.weight).normal_(0.0, cfg.initializer_factor)
        model.lm_head.weight = torch.nn.Parameter(head)
    model.train()
    opt = Adafactor(
        model.parameters(),
        lr=args.lr,
        scale_parameter=True,
        relative_step=False,
        warmup_init=False,
    )
    inputs, targets, (li, lt) = data
    losses, step_s = [], []
    it = batches(len(inputs), args.batch_size, seed)
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        idx = next(it)
        x = pad([inputs[i] for i in idx], li)
        y = pad([targets[i] for i in idx], lt)
        labels = y.masked_fill(y == 0, -100)
        loss = model(input_ids=x, attention_mask=(x != 0), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step_s.append(time.perf_counter() - t0)
        if step % 100 == 0:
            print(f"  seed {seed} step {step} loss {np.mean(losses[-100:]):.4f}", flush=True)
    return model, losses, statistics.median(step_s)


@torch.no_grad()
def accuracy(model, data, batch_size):
    model.eval()
    inputs, targets, (li, lt) = data
    right = 0
    for i in range(0, len(inputs), batch_size):
        x = pad(inputs[i : i + batch_size], li)
        want = targets[i : i + batch_size]
        out = model.generate(
            input_ids=x,
            attention_mask=(x != 0),
            max_new_tokens=lt,
            num_beams=1,
            do_sample=False,
        )
        for row, t in zip(out.tolist(), want):
            got = row[1:]  # after the decoder start (pad) token
            if 1 in got:
                got = got[: got.index(1)]
            right += got == t[: t.index(1) if 1 in t else len(t)]
    return right / len(inputs)


def conveyor_cell(pattern, seeds):
    """The conveyor cell's dev accuracy per seed, from its evaluations."""
    out = {}
    for s in seeds:
        # The study's own evaluations (study-eval-TASK); a plain `conveyor eval`'s otherwise.
        run = pattern.format(seed=s)
        found = glob.glob(os.path.join(run, "checkpoints/*/study-eval-*/metrics.json")) or glob.glob(
            os.path.join(run, "checkpoints/*/eval-*/metrics.json"))
        if found:
            with open(sorted(found)[-1]) as f:
                out[s] = json.load(f)["scores"]["accuracy"]
    return out


def mean_sd(v):
    return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--hf-config", required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dev-limit", type=int, default=0, help="evaluate N dev examples (as eval --limit)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", required=True)
    p.add_argument("--conveyor", help="conveyor run folder pattern with {seed}")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Explicit attention, as conveyor's transformer computes it by default (transformers 5's
    # T5 takes sdpa unless told otherwise; 4's has only this one).
    cfg = T5Config.from_pretrained(os.path.dirname(os.path.abspath(args.hf_config)),
                                   attn_implementation="eager")
    with open(args.hf_config) as f:
        untied = json.load(f).get("tie_word_embeddings") is False
    train_data, dev_data = read_examples(args.train), read_examples(args.dev, args.dev_limit)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}
    for seed in seeds:
        model, losses, step_s = train(cfg, train_data, args, seed, untied)
        acc = accuracy(model, dev_data, 256)
        runs[seed] = {"accuracy": acc, "median_step_s": step_s, "losses": losses}
        print(f"seed {seed}: dev accuracy {100 * acc:.2f}%, median {1000 * step_s:.1f} ms/step", flush=True)
    result = {
        "reference": "transformers T5ForConditionalGeneration",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lr": args.lr,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_examples": len(train_data[0]),
        "dev_examples": len(dev_data[0]),
        "runs": runs,
    }
    ref = mean_sd([runs[s]["accuracy"] * 100 for s in seeds])
    print(f"reference: {ref[0]:.2f} ± {ref[1]:.2f} over seeds {seeds}")
    if args.conveyor:
        conv = conveyor_cell(args.conveyor, seeds)
        result["conveyor"] = conv
        if len(conv) == len(seeds):
            c = mean_sd([conv[s] * 100 for s in seeds])
            print(f"conveyor:  {c[0]:.2f} ± {c[1]:.2f}; difference {c[0] - ref[0]:+.2f} points")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
