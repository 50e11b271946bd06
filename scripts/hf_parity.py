"""transformers' side of conveyor's Hugging Face parity tests (model/src/hf/tests.rs).

  make DIR --variant NAME --seed S [--vocab ROWS]
      A random-weight T5ForConditionalGeneration built from a T5Config (MT5... for the mt5
      variant; no network; layer norm weights drawn too, so a swapped norm shows), saved to DIR/hf (and as 50 KB
      shards to DIR/hf-sharded, in bfloat16 to DIR/hf-bf16), and
      DIR/reference.safetensors: a padded batch (inputs, input_mask, targets, target_mask)
      and, for it, transformers' logits and loss (eval mode), the gradients of one training
      step (`grad/NAME`), the weights after one and two of transformers' Adafactor steps
      (`updated/NAME`, `updated2/NAME`; scale_parameter=True, relative_step=False,
      warmup_init=False, lr=1e-3; the second step's beta2 is the first with decay) and greedy
      generate() tokens (num_beams=1).
  logits HF_DIR BATCH OUT
      Loads HF_DIR with from_pretrained (and T5Tokenizer when it holds spiece.model), and
      writes the logits it gives the batch in BATCH to OUT. Prints what it loaded as JSON.
  resave HF_DIR OUT
      Loads HF_DIR with from_pretrained and saves it to OUT, as a user of this transformers
      would after fine-tuning (transformers 5 writes T5 configs of its own form).

Runs with transformers 4 and 5 (the tests choose by PYTHONPATH); `make` with transformers 5
makes its own kind of v1.1 and mT5 model: the head tied to the embedding, logits not scaled.
"""

import argparse
import copy
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import MT5Config, MT5ForConditionalGeneration, T5Config, T5ForConditionalGeneration
from transformers.optimization import Adafactor

VARIANTS = {
    # T5 v1.0: ReLU, tied embeddings (logits scaled by d_model^-0.5); more decoder layers
    # than encoder layers.
    "v1.0": dict(d_model=32, d_ff=64, num_heads=4, d_kv=8, num_layers=2, num_decoder_layers=3,
                 relative_attention_num_buckets=8, relative_attention_max_distance=16,
                 feed_forward_proj="relu", tie_word_embeddings=True),
    # T5 v1.1: gated GELU, separate lm_head; heads x d_kv (64) wider than d_model (48).
    "v1.1": dict(d_model=48, d_ff=80, num_heads=4, d_kv=16, num_layers=3, num_decoder_layers=2,
                 relative_attention_num_buckets=16, relative_attention_max_distance=32,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    # mT5 (its config class's defaults: gated GELU; transformers 4 makes the head separate,
    # 5 ties it; neither scales the logits).
    "mt5": dict(d_model=48, d_ff=80, num_heads=4, d_kv=16, num_layers=2, num_decoder_layers=2,
                relative_attention_num_buckets=16, relative_attention_max_distance=32),
    # A wider v1.0 with T5's bucket settings.
    "v1.0-wide": dict(d_model=64, d_ff=128, num_heads=8, d_kv=8, num_layers=2,
                      num_decoder_layers=2, relative_attention_num_buckets=32,
                      relative_attention_max_distance=128, feed_forward_proj="relu",
                      tie_word_embeddings=True),
}
VOCAB = 131
INPUT_LENGTHS = [21, 13, 6]
TARGET_LENGTHS = [9, 5, 2]


def model_class(variant):
    return MT5ForConditionalGeneration if variant == "mt5" else T5ForConditionalGeneration


def config(variant, vocab=VOCAB):
    cls = MT5Config if variant == "mt5" else T5Config
    return cls(vocab_size=vocab, dropout_rate=0.0, layer_norm_epsilon=1e-6,
               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **VARIANTS[variant])


def padded(lengths, low, high, gen):
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(low, high, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


def forward(model, batch):
    labels = batch["targets"].masked_fill(batch["target_mask"] == 0, -100)
    return model(input_ids=batch["inputs"], attention_mask=batch["input_mask"], labels=labels)


def make(args):
    torch.manual_seed(args.seed)
    model = model_class(args.variant)(config(args.variant, args.vocab))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.uniform_(0.5, 1.5)
    model.save_pretrained(f"{args.dir}/hf")
    model.save_pretrained(f"{args.dir}/hf-sharded", max_shard_size="50KB")
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(f"{args.dir}/hf-bf16")
    gen = torch.Generator().manual_seed(args.seed)
    inputs, input_mask = padded(INPUT_LENGTHS, 2, args.vocab, gen)
    targets, target_mask = padded(TARGET_LENGTHS, 2, args.vocab, gen)
    batch = dict(inputs=inputs, input_mask=input_mask, targets=targets, target_mask=target_mask)
    out = dict(batch)
    model.eval()
    with torch.no_grad():
        o = forward(model, batch)
        out["logits"] = o.logits
        out["loss"] = o.loss.reshape(1)
        # Without the cache: transformers 4.57 sizes it by the encoder's layer count, which
        # fails when the decoder has more layers.
        out["generated"] = model.generate(input_ids=inputs, attention_mask=input_mask,
                                          max_new_tokens=8, num_beams=1, do_sample=False,
                                          use_cache=False)
    model.train()
    forward(model, batch).loss.backward()
    for name, p in model.named_parameters():
        out[f"grad/{name}"] = p.grad.detach().clone()
    opt = Adafactor(model.parameters(), lr=1e-3, scale_parameter=True, relative_step=False,
                    warmup_init=False)
    opt.step()
    for name, p in model.named_parameters():
        out[f"updated/{name}"] = p.detach().clone()
    opt.zero_grad(set_to_none=True)
    forward(model, batch).loss.backward()
    opt.step()
    for name, p in model.named_parameters():
        out[f"updated2/{name}"] = p.detach().clone()
    save_file({k: v.contiguous() for k, v in out.items()}, f"{args.dir}/reference.safetensors")


def logits(args):
    model, info = T5ForConditionalGeneration.from_pretrained(args.hf_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"{args.hf_dir} did not load cleanly: {problems}", file=sys.stderr)
        sys.exit(1)
    model.eval()
    batch = load_file(args.batch)
    with torch.no_grad():
        o = forward(model, batch)
    save_file({"logits": o.logits.contiguous()}, args.out)
    loaded = {"class": type(model).__name__, "parameters": sum(p.numel() for p in model.parameters())}
    if os.path.exists(os.path.join(args.hf_dir, "spiece.model")):
        from transformers import T5Tokenizer

        tok = T5Tokenizer.from_pretrained(args.hf_dir)
        loaded["tokenizer_size"] = len(tok)
        loaded["hello"] = tok("hello world").input_ids
        # The ids of SentencePiece itself (and T5's EOS) for texts with the usual traps:
        # leading, doubled and odd whitespace, digits, accents, ligatures, symbols.
        import sentencepiece

        spm = sentencepiece.SentencePieceProcessor(model_file=os.path.join(args.hf_dir, "spiece.model"))
        texts = ["hello world", " The  quick brown fox,\tjumped 12,345 times!", "naïve café — “quoted”",
                 "Ünïcödé ß ﬁ ①", "a\nb  c "]
        loaded["tokenizer_class"] = type(tok).__name__
        ids = [(t, tok(t).input_ids, spm.encode(t) + [1]) for t in texts]
        loaded["differs_from_sentencepiece"] = [
            {"text": t, "transformers": theirs, "sentencepiece": spm_ids}
            for t, theirs, spm_ids in ids if theirs != spm_ids]
    print(json.dumps(loaded))


def resave(args):
    T5ForConditionalGeneration.from_pretrained(args.hf_dir).save_pretrained(args.out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--variant", choices=sorted(VARIANTS), required=True)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--vocab", type=int, default=VOCAB, help="embedding rows")
    m.set_defaults(run=make)
    lg = sub.add_parser("logits")
    lg.add_argument("hf_dir")
    lg.add_argument("batch")
    lg.add_argument("out")
    lg.set_defaults(run=logits)
    rs = sub.add_parser("resave")
    rs.add_argument("hf_dir")
    rs.add_argument("out")
    rs.set_defaults(run=resave)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
