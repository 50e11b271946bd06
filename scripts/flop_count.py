"""Counts the floating-point operations of one training step (forward + backward, batch 1)
of the reference T5 in scripts/torch_t5_step.py with PyTorch's own counter
(torch.utils.flop_counter.FlopCounterMode, which counts matrix products), to cross-check the
analytic count of `conveyor model summary --json` (tests/train.rs compares the two).

Usage: flop_count.py --preset tiny --length 128 [--targets-length 32]
Prints one JSON object: {"train_flops": ..., "forward_flops": ...}.
"""

import argparse
import json
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_t5_step import PRESETS, T5  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--targets-length", type=int)
    ap.add_argument("--vocab-size", type=int, default=32100)
    a = ap.parse_args()
    d, ff, heads, layers = PRESETS[a.preset]
    torch.manual_seed(0)
    model = T5(a.vocab_size, d, ff, heads, layers)
    l, t = a.length, a.targets_length or max(a.length // 4, 1)
    x, y = torch.randint(3, a.vocab_size, (1, l)), torch.randint(3, a.vocab_size, (1, t))
    xm, ym = torch.ones(1, l), torch.ones(1, t)
    model.train()
    with FlopCounterMode(display=False) as fwd:
        loss = model(x, xm, y, ym)
    with FlopCounterMode(display=False) as both:
        loss = model(x, xm, y, ym)
        loss.backward()
    print(json.dumps({"forward_flops": fwd.get_total_flops(), "train_flops": both.get_total_flops()}))


if __name__ == "__main__":
    main()
