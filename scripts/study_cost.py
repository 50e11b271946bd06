#!/usr/bin/env python3
"""What a study's training costs on the machine that ran it, from its runs' metrics.

    python scripts/study_cost.py studies/out/learning-cpu

Sums, over every run folder under STUDY/runs, the median seconds per step times the steps
run. Medians, so that a run paused or slowed by other work for a while (the study's wall
clock) still counts at its normal pace; evaluations and process start-up are not included.
Prints a line per kind of run (pre-training, then fine-tuning per task) and the total.
"""

import json
import os
import statistics
import sys


def run_cost(run):
    elapsed = []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            elapsed.append(json.loads(line)["elapsed_s"])
    if len(elapsed) < 2:
        return 0, 0.0
    steps = [b - a for a, b in zip(elapsed, elapsed[1:]) if b >= a]
    return len(elapsed), statistics.median(steps) * len(elapsed)


def main():
    runs_dir = os.path.join(sys.argv[1], "runs")
    kinds = {}
    for name in sorted(os.listdir(runs_dir)):
        run = os.path.join(runs_dir, name)
        if not os.path.exists(os.path.join(run, "metrics.jsonl")):
            continue
        kind = "pre-training" if name.startswith("pretrain-") else "fine-tuning " + name.split("-")[0]
        steps, secs = run_cost(run)
        k = kinds.setdefault(kind, [0, 0, 0.0])
        k[0] += 1
        k[1] += steps
        k[2] += secs
    total = 0.0
    for kind, (runs, steps, secs) in kinds.items():
        print(f"{kind}: {runs} runs, {steps} steps, {secs / 60:.1f} min")
        total += secs
    print(f"total: {total / 3600:.2f} h of training at the median pace")


if __name__ == "__main__":
    main()
