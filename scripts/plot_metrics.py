#!/usr/bin/env python3
"""Turn kadapter's metrics.jsonl logs into PNG learning curves.

    python3 scripts/plot_metrics.py RUN_DIR [RUN_DIR ...] [--out curves.png] [--smooth 20]

Each RUN_DIR holds the metrics.jsonl written by `kadapter pretrain` / `finetune` (one JSON
object per line: step, epoch, loss, lr, grad_norm; evaluation lines carry "eval"; a step logged
twice counts once, the later line winning). Plots the training loss (moving average over
--smooth steps) and the learning rate of every run, the headline score of each evaluated split
against the step when a run evaluated during training (--eval-steps), and prints the evaluation
results. Needs matplotlib (pip install matplotlib).
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
                # A step logged twice (logs joined by hand): the later line wins.
                while steps and steps[-1] >= rec["step"]:
                    steps.pop()
                    losses.pop()
                    lrs.pop()
                steps.append(rec["step"])
                losses.append(rec["loss"])
                lrs.append(rec.get("lr", float("nan")))
    return steps, losses, lrs, evals


HEADLINE = ("micro_f1", "head_accuracy", "accuracy")  # the score kadapter keeps the best model by


def eval_series(evals):
    """{(split, metric): {step: score}} from the evaluation records (the last one per step)."""
    series = {}
    for rec in evals:
        ev = rec["eval"]
        metric = next((k for k in HEADLINE if k in ev), None)
        if metric is None or "step" not in rec:
            continue
        series.setdefault((ev.get("split", "?"), metric), {})[rec["step"]] = ev[metric]
    return series


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
    logs = []
    for run in args.runs:
        path = os.path.join(run, "metrics.jsonl")
        if not os.path.exists(path):
            sys.exit(f"{path}: not found")
        logs.append((os.path.basename(os.path.normpath(run)), read_log(path)))
    curves = any(len(points) > 1 for _, log in logs for points in eval_series(log[3]).values())
    fig, axes = plt.subplots(1, 3 if curves else 2, figsize=(16.5 if curves else 11, 4))
    ax_loss, ax_lr = axes[0], axes[1]
    for name, (steps, losses, lrs, evals) in logs:
        # A resumed run appends to the same log: keep the last record of each step.
        last = {}
        for s, l, r in zip(steps, losses, lrs):
            last[s] = (l, r)
        xs = sorted(last)
        ax_loss.plot(xs, smooth([last[x][0] for x in xs], args.smooth), label=name)
        ax_lr.plot(xs, [last[x][1] for x in xs], label=name)
        if curves:
            for (split, metric), points in sorted(eval_series(evals).items()):
                ks = sorted(points)
                axes[2].plot(ks, [points[k] for k in ks], marker="o", markersize=3, label=f"{name} {split} {metric}")
        for e in evals:
            print(f"{name}: {json.dumps(e['eval'])}")
    ax_loss.set(xlabel="step", ylabel=f"training loss (mean of {args.smooth})", title="loss")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="schedule")
    if curves:
        axes[2].set(xlabel="step", ylabel="score", title="evaluation")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
