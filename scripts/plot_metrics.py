#!/usr/bin/env python3
"""Turn kadapter's metrics.jsonl logs into PNG learning curves.

    python3 scripts/plot_metrics.py RUN_DIR [RUN_DIR ...] [--out curves.png] [--smooth 20]

Each RUN_DIR holds the metrics.jsonl written by `kadapter pretrain` / `finetune` (one JSON
object per line: step, epoch, loss, lr, grad_norm; evaluation lines carry "eval"). Plots the
training loss (moving average over --smooth steps) and the learning rate of every run, and
prints the evaluation results. Needs matplotlib (pip install matplotlib).
"""

import argparse
import json
import os
import sys


def read_log(path):
    steps, losses, lrs, evals = [], [], [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}: line {n}: not JSON ({e})")
            if "eval" in rec:
                evals.append(rec)
            elif "loss" in rec and "step" in rec:
                steps.append(rec["step"])
                losses.append(rec["loss"])
                lrs.append(rec.get("lr", float("nan")))
    return steps, losses, lrs, evals


def smooth(values, window):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories holding metrics.jsonl")
    ap.add_argument("--out", default="curves.png")
    ap.add_argument("--smooth", type=int, default=20)
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_metrics.py needs matplotlib: pip install matplotlib")
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 4))
    for run in args.runs:
        path = os.path.join(run, "metrics.jsonl")
        if not os.path.exists(path):
            sys.exit(f"{path}: not found")
        steps, losses, lrs, evals = read_log(path)
        name = os.path.basename(os.path.normpath(run))
        # A resumed run appends to the same log: keep the last record of each step.
        last = {}
        for s, l, r in zip(steps, losses, lrs):
            last[s] = (l, r)
        xs = sorted(last)
        ax_loss.plot(xs, smooth([last[x][0] for x in xs], args.smooth), label=name)
        ax_lr.plot(xs, [last[x][1] for x in xs], label=name)
        for e in evals:
            print(f"{name}: {json.dumps(e['eval'])}")
    ax_loss.set(xlabel="step", ylabel=f"training loss (mean of {args.smooth})", title="loss")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
