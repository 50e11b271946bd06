"""Draws the training benchmark like the paper's Figures 1 and 2: examples per second and
peak memory against input length, one line per series (an architecture, with its attention
when not the explicit one: "transformer (sdpa)"), log scales.

Usage: plot_bench_train.py BENCH_DIR  (reads bench-train.json, writes speed.png, memory.png)
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    out = sys.argv[1]
    points = json.load(open(os.path.join(out, "bench-train.json")))
    for p in points:
        a = p.get("attention", "explicit")
        p["series"] = p["arch"] if a == "explicit" else f"{p['arch']} ({a})"
    names = []
    for p in points:
        if p["series"] not in names:
            names.append(p["series"])
    on_gpu = any("peak_gpu_allocated_mb" in p for p in points)
    memory = ("peak_gpu_allocated_mb", "peak GPU memory allocated (MB)") if on_gpu else (
        "peak_rss_mb", "peak memory (MB)")
    for key, label, png in [
        ("examples_per_s", "training examples / s", "speed.png"),
        (memory[0], memory[1], "memory.png"),
    ]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in names:
            xs = [p["length"] for p in points if p["series"] == name and key in p]
            ys = [p[key] for p in points if p["series"] == name and key in p]
            ax.plot(xs, ys, marker="o", label=name, linestyle="--" if "(" in name else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("input length (tokens)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out, png)
        fig.savefig(path, dpi=120)
        print(path)


if __name__ == "__main__":
    main()
