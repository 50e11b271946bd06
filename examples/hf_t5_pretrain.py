#!/usr/bin/env python3
"""Pre-train Hugging Face's T5ForConditionalGeneration from conveyor token shards, with
conveyor.Loader doing T5 span corruption on the fly. The loop checkpoints the model, the
optimiser, torch's random state and the loader's state_dict() together, so a run stopped at
any checkpoint and resumed with --resume continues exactly as if it had not stopped.

    conveyor ingest corpus.jsonl.gz --vocab spiece.model --out tokens
    python examples/hf_t5_pretrain.py --tokens tokens --out run --steps 1000
    python examples/hf_t5_pretrain.py --tokens tokens --out run --steps 2000 --resume
    torchrun --nproc-per-node 2 examples/hf_t5_pretrain.py --tokens tokens --out run2 --steps 1000

Under torchrun it trains with DistributedDataParallel, each rank reading its share through
the loader with align_steps=1: step by step, N ranks with --batch-size B train as one process
with N x B (the loss is summed over target tokens and divided by all ranks' count; a rank
left without rows at an epoch's end joins the step with a stand-in row of weight 0), exactly
so with --dropout 0 (each rank draws its own dropout masks). On GPUs each rank uses the one
of its LOCAL_RANK, with NCCL; without them, the CPU with Gloo.

The model is a T5 v1.1-shaped config sized by --d-model/--layers/--heads (random weights);
its vocabulary is the data's (pieces + 100 extra ids). Adafactor with T5's inverse square
root schedule, as in the paper's pre-training.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from transformers import T5Config, T5ForConditionalGeneration
from transformers.optimization import Adafactor

import conveyor


def args_():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", required=True, help="a conveyor token folder (conveyor ingest)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt and log.jsonl")
    p.add_argument("--steps", type=int, required=True, help="train until this step")
    p.add_argument("--batch-size", type=int, default=8, help="rows per step of each process")
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--device", default="auto", help="auto (the rank's GPU if there is one), cpu, or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    return p.parse_args()


def model_for(args, vocab_size):
    torch.manual_seed(args.seed)
    cfg = T5Config(
        vocab_size=vocab_size, d_model=args.d_model, d_kv=args.d_model // args.heads,
        d_ff=4 * args.d_model, num_layers=args.layers, num_heads=args.heads,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, dropout_rate=args.dropout,
    )
    return T5ForConditionalGeneration(cfg)


def distributed(asked):
    """(rank, world size, device): torchrun's ranks, with the process group started, each on
    the GPU of its LOCAL_RANK (NCCL) or the CPU (Gloo); (0, 1, device) alone."""
    cuda = asked == "cuda" or (asked == "auto" and torch.cuda.is_available())
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world, device


def rng_state(device):
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state, device):
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(path, model, opt, loader, step, world, device):
    """One checkpoint for all ranks, written by rank 0: the model and optimiser (the same on
    every rank) and each rank's loader state and random state."""
    mine = {"loader": loader.state_dict(), "rng": rng_state(device)}
    ranks = [mine]
    if world > 1:
        ranks = [None] * world
        dist.all_gather_object(ranks, mine)
        if dist.get_rank() != 0:
            return
    tmp = path + ".partial"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "ranks": ranks,
                "step": step}, tmp)
    os.replace(tmp, path)


def summed_loss(model, batch, vocab, device):
    """(cross-entropy summed over the batch's target tokens, their count). A batch of no rows
    (align_steps' padding at an epoch's end) runs a stand-in row with weight 0, so this rank
    still joins DDP's gradient all-reduce."""
    inputs = torch.from_numpy(batch["inputs"]).long()
    targets = torch.from_numpy(batch["targets"]).long()
    weight = 1.0
    if inputs.shape[0] == 0:
        inputs, targets, weight = torch.ones(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), 0.0
    inputs, targets = inputs.to(device), targets.to(device)
    labels = targets.masked_fill(targets == 0, -100)
    logits = model(input_ids=inputs, attention_mask=inputs != 0, labels=labels).logits
    total = F.cross_entropy(logits.view(-1, vocab), labels.view(-1), ignore_index=-100, reduction="sum")
    return total * weight, (labels != -100).sum().item() * weight


def main():
    args = args_()
    rank, world, device = distributed(args.device)
    os.makedirs(args.out, exist_ok=True)
    vocab = conveyor.read_manifest(args.tokens)["vocab"]["size"] + 100
    model = model_for(args, vocab).to(device)
    torch.manual_seed(args.seed + rank)  # each rank's own dropout
    opt = Adafactor(model.parameters(), lr=None, scale_parameter=True, relative_step=True,
                    warmup_init=False)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    step, state = 0, None
    if args.resume:
        ckpt = torch.load(ckpt_path, weights_only=False, map_location="cpu")
        if "ranks" not in ckpt:  # written by one process before the example knew ranks
            ckpt["ranks"] = [{"loader": ckpt["loader"], "rng": {"cpu": ckpt["rng"], "cuda": None}}]
        if len(ckpt["ranks"]) != world:
            raise SystemExit(f"{ckpt_path} was written by {len(ckpt['ranks'])} process(es): resume with as many")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["ranks"][rank]["rng"], device)
        step, state = ckpt["step"], ckpt["ranks"][rank]["loader"]
    loader = conveyor.Loader(args.tokens, args.batch_size, inputs_length=args.inputs_length,
                             seed=args.seed, vocab_size=vocab, state=state, rank=rank,
                             world_size=world, align_steps=1)
    ids = [device.index] if device.type == "cuda" else None
    net = DistributedDataParallel(model, device_ids=ids) if world > 1 else model
    net.train()
    log_path = os.path.join(args.out, "log.jsonl")
    # The log holds the steps up to the checkpoint resumed from (none on a fresh run): steps
    # logged after it are run again.
    kept = []
    if args.resume and os.path.exists(log_path):
        kept = [line for line in open(log_path) if json.loads(line)["step"] <= step]
    loss = None
    with open(log_path, "w") if rank == 0 else open(os.devnull, "w") as log:
        log.writelines(kept)
        for batch in loader:
            if step >= args.steps:
                break
            total, tokens = summed_loss(net, batch, vocab, device)
            sums = torch.tensor([total.item(), tokens], dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(sums)
            # DDP averages the ranks' gradients: times the world size, they sum to the
            # gradient of the mean over every rank's tokens.
            (total * (world / sums[1].item())).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            loss = (sums[0] / sums[1]).item()
            log.write(json.dumps({"step": step, "loss": loss}) + "\n")
            if step % args.save_every == 0 or step == args.steps:
                save(ckpt_path, model, opt, loader, step, world, device)
    if rank == 0:
        last = "" if loss is None else f": loss {loss:.4f}"
        print(f"step {step}{last}; checkpoint {ckpt_path}")
    if world > 1:
        # Gloo's worker thread frees the tensors of the checkpoint's last gather, which takes
        # the GIL; a DDP wrapper dropped at exit joined that thread while holding the GIL (a
        # hang seen in the test suite). A barrier lets the thread finish first, and the
        # wrapper goes before the process group.
        dist.barrier()
        del net
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
