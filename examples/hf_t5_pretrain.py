#!/usr/bin/env python3
"""Pre-train Hugging Face's T5ForConditionalGeneration from conveyor token shards, with
conveyor.Loader doing T5 span corruption on the fly. The loop checkpoints the model, the
optimiser, torch's random state and the loader's state_dict() together, so a run stopped at
any checkpoint and resumed with --resume continues exactly as if it had not stopped.

    conveyor ingest corpus.jsonl.gz --vocab spiece.model --out tokens
    python examples/hf_t5_pretrain.py --tokens tokens --out run --steps 1000
    python examples/hf_t5_pretrain.py --tokens tokens --out run --steps 2000 --resume

The model is a T5 v1.1-shaped config sized by --d-model/--layers/--heads (random weights);
its vocabulary is the data's (pieces + 100 extra ids). Adafactor with T5's inverse square
root schedule, as in the paper's pre-training.
"""

import argparse
import json
import os

import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.optimization import Adafactor

import conveyor


def args_():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", required=True, help="a conveyor token folder (conveyor ingest)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt and log.jsonl")
    p.add_argument("--steps", type=int, required=True, help="train until this step")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--inputs-length", type=int, default=128)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
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
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    return T5ForConditionalGeneration(cfg)


def save(path, model, opt, loader, step):
    tmp = path + ".partial"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "rng": torch.get_rng_state(), "loader": loader.state_dict(), "step": step}, tmp)
    os.replace(tmp, path)


def main():
    args = args_()
    os.makedirs(args.out, exist_ok=True)
    vocab = conveyor.read_manifest(args.tokens)["vocab"]["size"] + 100
    model = model_for(args, vocab)
    opt = Adafactor(model.parameters(), lr=None, scale_parameter=True, relative_step=True,
                    warmup_init=False)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    step, state = 0, None
    if args.resume:
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        step, state = ckpt["step"], ckpt["loader"]
    loader = conveyor.Loader(args.tokens, args.batch_size, inputs_length=args.inputs_length,
                             seed=args.seed, vocab_size=vocab, state=state)
    model.train()
    log_path = os.path.join(args.out, "log.jsonl")
    # The log holds the steps up to the checkpoint resumed from (none on a fresh run): steps
    # logged after it are run again.
    kept = []
    if args.resume and os.path.exists(log_path):
        kept = [line for line in open(log_path) if json.loads(line)["step"] <= step]
    loss = None
    with open(log_path, "w") as log:
        log.writelines(kept)
        for batch in loader:
            if step >= args.steps:
                break
            inputs = torch.from_numpy(batch["inputs"]).long()
            targets = torch.from_numpy(batch["targets"]).long()
            loss = model(input_ids=inputs, attention_mask=inputs != 0,
                         labels=targets.masked_fill(targets == 0, -100)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            log.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
            if step % args.save_every == 0 or step == args.steps:
                save(ckpt_path, model, opt, loader, step)
    last = "" if loss is None else f": loss {loss.item():.4f}"
    print(f"step {step}{last}; checkpoint {ckpt_path}")


if __name__ == "__main__":
    main()
