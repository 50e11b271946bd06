"""A study's figures, from the figures.json its runner writes.

Usage: plot_study.py FIGURES.json OUT_DIR

Writes OUT_DIR/loss-curves.png (pre-training loss per architecture, then per task the
fine-tuning loss of each cell at its chosen learning rate, averaged over seeds) and, when
any run was evaluated along the way, OUT_DIR/accuracy-curves.png (dev accuracy against
fine-tuning steps, mean over seeds with the standard deviation as error bars). Run folders
in FIGURES.json are relative to the folder that holds it.
"""

import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]


def losses(run):
    steps, values = [], []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            steps.append(m["step"])
            values.append(m["loss"])
    return steps, values


def smooth(values, width):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def mean_loss(runs):
    """The per-step mean over runs (cut to the shortest), smoothed."""
    curves = [losses(r) for r in runs if os.path.exists(os.path.join(r, "metrics.jsonl"))]
    if not curves:
        return [], []
    n = min(len(c[0]) for c in curves)
    mean = [statistics.mean(c[1][i] for c in curves) for i in range(n)]
    return curves[0][0][:n], smooth(mean, max(1, n // 50))


def style(cell, archs):
    color = COLORS[archs.index(cell["arch"]) % len(COLORS)]
    return dict(color=color, linestyle="-" if cell["pretrained"] else "--")


def main():
    figures, out = json.load(open(sys.argv[1])), sys.argv[2]
    base = os.path.dirname(os.path.abspath(sys.argv[1]))
    for group in [figures["pretrain"]] + [t["cells"] for t in figures["tasks"]]:
        for entry in group:
            entry["runs"] = [os.path.join(base, r) for r in entry["runs"]]
    archs = [p["label"] for p in figures["pretrain"]]
    tasks = figures["tasks"]
    panels = len(tasks) + (1 if figures["pretrain"] else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 3.8), squeeze=False)
    axes = list(axes[0])
    if figures["pretrain"]:
        ax = axes.pop(0)
        for i, p in enumerate(figures["pretrain"]):
            steps, values = mean_loss(p["runs"])
            ax.plot(steps, values, color=COLORS[i % len(COLORS)], label=p["label"])
        ax.set_title("pre-training (span corruption)")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax, t in zip(axes, tasks):
        for c in t["cells"]:
            steps, values = mean_loss(c["runs"])
            ax.plot(steps, values, label=c["label"], **style(c, archs))
        ax.set_title(f"fine-tuning {t['task']}")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    for ax in fig.axes:
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss-curves.png"), dpi=110)

    if not any(len(c["curve"]) > 1 for t in tasks for c in t["cells"]):
        return
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.8), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        for c in t["cells"]:
            steps = [p[0] for p in c["curve"]]
            accs = [[100 * a for a in p[1]] for p in c["curve"]]
            mean = [statistics.mean(a) for a in accs]
            sd = [statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs]
            ax.errorbar(steps, mean, yerr=sd, capsize=2, marker="o", markersize=3,
                        label=c["label"], **style(c, archs))
        if t.get("majority") is not None:
            ax.axhline(100 * t["majority"], color="grey", linewidth=0.8, linestyle=":",
                       label="majority class")
        ax.set_title(t["task"])
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("dev accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "accuracy-curves.png"), dpi=110)


if __name__ == "__main__":
    main()
