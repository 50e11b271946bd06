"""The reference for `conveyor bench step`: conveyor's `transformer` model (T5 baseline) and
its Adafactor step written in plain PyTorch, timed on the same shapes, so the tch trainer can
be compared with what a PyTorch user would run.

Same architecture as model/src (RMS norm, no biases, shared relative position bias, ReLU FFN,
tied embeddings scaled by d_model^-0.5, dropout 0.1, on the attention weights too) and the
same Adafactor (factored second moments, beta2 = 1 - t^-0.8, clipping 1.0, parameter
scaling). `--attention sdpa` computes attention with F.scaled_dot_product_attention (the
bias as an additive mask in the queries' dtype, scale 1, dropout inside), as conveyor's
`attention = "sdpa"` does.
`--impl transformers` times transformers' T5ForConditionalGeneration (the same shapes, a
T5Config with dropout 0.1, ReLU, tied embeddings) with transformers' Adafactor
(scale_parameter=True, relative_step=False, warmup_init=False) instead; its attention is
the eager one, or with `--attention sdpa` its sdpa one (transformers 5; 4 has none), and the
output says which ran and the transformers version.
`--bf16` runs forward and backward under torch.autocast(bfloat16) with float32 weights and
optimiser, the mixed precision a PyTorch user runs (conveyor's `--bf16` keeps float32 masters
and a bfloat16 copy). The loss stays on the device until the timed steps are over, as
conveyor's trainer reads its figures back once per window of steps.
Prints one JSON object: seconds per step, examples per second, the last loss.
"""

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

PRESETS = {"tiny": (64, 128, 4, 2), "small": (512, 2048, 8, 6), "base": (768, 3072, 12, 12)}


class RMSNorm(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + 1e-6)).to(x.dtype) * self.weight


def buckets(rel, bidirectional, num=32, max_distance=128):
    ret = torch.zeros_like(rel)
    n = -rel
    if bidirectional:
        num //= 2
        ret += (n < 0).long() * num
        n = n.abs()
    else:
        n = n.clamp(min=0)
    exact = num // 2
    large = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (num - exact)).long()
    large = large.clamp(max=num - 1)
    return ret + torch.where(n < exact, n, large)


class Attention(torch.nn.Module):
    sdpa = False  # set for every layer by --attention sdpa

    def __init__(self, d, heads, relative, bidirectional):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.q = torch.nn.Linear(d, d, bias=False)
        self.k = torch.nn.Linear(d, d, bias=False)
        self.v = torch.nn.Linear(d, d, bias=False)
        self.o = torch.nn.Linear(d, d, bias=False)
        self.rel = torch.nn.Embedding(32, heads) if relative else None
        self.bidirectional = bidirectional

    def bias(self, q, k):
        rel = torch.arange(k)[None, :] - torch.arange(q)[:, None]
        return self.rel(buckets(rel, self.bidirectional)).permute(2, 0, 1)[None]

    def forward(self, x, kv, bias):
        b, t, d = x.shape
        split = lambda z: z.view(b, -1, self.h, self.dk).transpose(1, 2)
        q, k, v = split(self.q(x)), split(self.k(kv)), split(self.v(kv))
        if Attention.sdpa:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                               dropout_p=0.1 if self.training else 0.0, scale=1.0)
        else:
            w = torch.softmax((q @ k.transpose(-2, -1) + bias).float(), -1).to(v.dtype)
            a = F.dropout(w, 0.1, self.training) @ v
        return self.o(a.transpose(1, 2).reshape(b, t, d))


class FFN(torch.nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.wi = torch.nn.Linear(d, ff, bias=False)
        self.wo = torch.nn.Linear(ff, d, bias=False)

    def forward(self, x):
        return self.wo(F.dropout(F.relu(self.wi(x)), 0.1, self.training))


class T5(torch.nn.Module):
    def __init__(self, vocab, d, ff, heads, layers):
        super().__init__()
        self.d = d
        self.shared = torch.nn.Embedding(vocab, d)
        self.enc = torch.nn.ModuleList(
            torch.nn.ModuleList([RMSNorm(d), Attention(d, heads, i == 0, True), RMSNorm(d), FFN(d, ff)])
            for i in range(layers)
        )
        self.dec = torch.nn.ModuleList(
            torch.nn.ModuleList(
                [RMSNorm(d), Attention(d, heads, i == 0, False), RMSNorm(d), Attention(d, heads, False, False),
                 RMSNorm(d), FFN(d, ff)]
            )
            for i in range(layers)
        )
        self.enc_norm, self.dec_norm = RMSNorm(d), RMSNorm(d)

    def forward(self, x, xm, y, ym):
        drop = lambda z: F.dropout(z, 0.1, self.training)
        # With sdpa the masks are made in the queries' dtype once per step, as conveyor makes
        # them, not cast in every layer.
        auto = torch.is_autocast_enabled(x.device.type)
        dt = torch.get_autocast_dtype(x.device.type) if auto else self.shared.weight.dtype
        mask = (lambda m: m.to(dt)) if Attention.sdpa else (lambda m: m)
        keys = mask(((1 - xm) * -1e9)[:, None, None, :])
        h = drop(self.shared(x))
        bias = mask(self.enc[0][1].bias(x.shape[1], x.shape[1]) + keys)
        for n1, att, n2, ffn in self.enc:
            z = n1(h)
            h = h + drop(att(z, z, bias))
            h = h + drop(ffn(n2(h)))
        enc = drop(self.enc_norm(h))
        t = y.shape[1]
        dec_in = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], 1)
        causal = torch.triu(torch.ones(t, t), 1)[None, None] * -1e9
        sbias = mask(self.dec[0][1].bias(t, t) + causal)
        g = drop(self.shared(dec_in))
        for n1, att, n2, cross, n3, ffn in self.dec:
            z = n1(g)
            g = g + drop(att(z, z, sbias))
            g = g + drop(cross(n2(g), enc, keys))
            g = g + drop(ffn(n3(g)))
        g = drop(self.dec_norm(g))
        logits = (g * self.d ** -0.5) @ self.shared.weight.t()
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        return (nll * ym.reshape(-1)).sum() / ym.sum().clamp(min=1)


class Adafactor:
    def __init__(self, params, lr):
        self.params, self.lr, self.t = list(params), lr, 0
        self.state = [
            (torch.zeros(p.shape[:-1]), torch.zeros(p.shape[:-2] + p.shape[-1:])) if p.dim() >= 2 else torch.zeros_like(p)
            for p in self.params
        ]

    @torch.no_grad()
    def step(self):
        self.t += 1
        beta2 = 1 - self.t ** -0.8
        for i, p in enumerate(self.params):
            g = p.grad
            sq = g * g + 1e-30
            s = self.state[i]
            if isinstance(s, tuple):
                row, col = s
                row.mul_(beta2).add_(sq.mean(-1) * (1 - beta2))
                col.mul_(beta2).add_(sq.mean(-2) * (1 - beta2))
                u = g * (row / row.mean(-1, keepdim=True)).rsqrt().unsqueeze(-1) * col.unsqueeze(-2).rsqrt()
            else:
                s.mul_(beta2).add_(sq * (1 - beta2))
                u = g * s.rsqrt()
            # Clipping and parameter scale stay on the device (no host round trip per tensor).
            u = u / (u.pow(2).mean().sqrt() / 1.0).clamp(min=1.0)
            p.sub_(u * self.lr * p.pow(2).mean().sqrt().clamp(min=1e-3))
            p.grad = None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--targets-length", type=int, default=None, help="default: a quarter of --length")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16, float32 weights")
    ap.add_argument("--attention", default="explicit", choices=["explicit", "sdpa"])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--impl", default="plain", choices=["plain", "transformers"])
    a = ap.parse_args()
    Attention.sdpa = a.attention == "sdpa"
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    # Every tensor below (weights, optimiser state, masks, batches) is made on this device.
    torch.set_default_device(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    torch.manual_seed(0)
    d, ff, heads, layers = PRESETS[a.preset]
    b, l = a.batch_size, a.length
    t = a.targets_length if a.targets_length else max(a.length // 4, 1)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16)
    x = torch.randint(3, 32000, (b, l))
    y = torch.randint(3, 32000, (b, t))
    xm, ym = torch.ones(b, l), torch.ones(b, t)
    extra = {}
    if a.impl == "transformers":
        import transformers
        from transformers import T5Config, T5ForConditionalGeneration
        from transformers.optimization import Adafactor as HfAdafactor

        # transformers 5's T5 has an sdpa path and takes it unless told otherwise; 4's has none.
        if a.attention == "sdpa" and not T5ForConditionalGeneration._supports_sdpa:
            raise SystemExit(f"transformers {transformers.__version__}'s T5 has no sdpa path "
                             "(transformers 5's has)")
        cfg = T5Config(vocab_size=32100, d_model=d, d_ff=ff, num_heads=heads, d_kv=d // heads,
                       num_layers=layers, dropout_rate=0.1, feed_forward_proj="relu",
                       tie_word_embeddings=True, decoder_start_token_id=0, pad_token_id=0,
                       eos_token_id=1,
                       attn_implementation="sdpa" if a.attention == "sdpa" else "eager")
        model = T5ForConditionalGeneration(cfg)
        # What it runs, in this script's words, for the caller's check.
        ran = getattr(model.config, "_attn_implementation", None) or "eager"
        extra = {"transformers": transformers.__version__,
                 "attention": {"eager": "explicit"}.get(ran, ran)}
        opt = HfAdafactor(model.parameters(), lr=0.01, scale_parameter=True, relative_step=False,
                          warmup_init=False)
        model.train()

        def step():
            with autocast:
                loss = model(input_ids=x, attention_mask=xm, labels=y).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()
    else:
        model = T5(32100, d, ff, heads, layers)
        torch.nn.init.normal_(model.shared.weight, 0, 1)
        opt = Adafactor(model.parameters(), 0.01)
        model.train()

        def step():
            with autocast:
                loss = model(x, xm, y, ym)
            loss.backward()
            opt.step()
            return loss.detach()

    for _ in range(4):  # untimed, as `conveyor bench train-one` takes 3 warm-up steps + 1
        step()
    sync()
    t0 = time.perf_counter()
    last = None
    for _ in range(a.steps):
        last = step()
    sync()
    secs = (time.perf_counter() - t0) / a.steps
    out = {"seconds_per_step": secs, "examples_per_s": b / secs, "device": device,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "bf16": a.bf16,
           "targets_length": t, "attention": a.attention, "final_loss": float("nan") if last is None else last.item(),
           **extra}
    if device == "cuda":
        out["peak_gpu_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
