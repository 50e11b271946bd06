"""Loss curves of conveyor runs: one PNG with a line per run (training loss against step).

Usage: plot_losses.py OUT.png RUN_DIR...   (reads RUN_DIR/metrics.jsonl)
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    out, runs = sys.argv[1], sys.argv[2:]
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        steps, losses = [], []
        for line in open(os.path.join(run, "metrics.jsonl")):
            m = json.loads(line)
            steps.append(m["step"])
            losses.append(m["loss"])
        ax.plot(steps, losses, label=os.path.basename(run.rstrip("/")))
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
