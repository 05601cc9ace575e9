#!/usr/bin/env python3
"""The tables of tools/shipped_vs_keras.sh's runs: every run's final-epoch test accuracy and training
speed, then per (model, batch, epochs, tool) the mean ± standard deviation over seeds, Markdown.

    python3 tools/shipped_report.py OUT/runs.jsonl [MORE.jsonl ...]
"""
import json
import statistics
import sys
from collections import defaultdict


def main():
    runs = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
    last = {}
    for r in runs:
        key = (r["model"], r.get("batch", 32), r["tool"], r["seed"])
        last.setdefault(key, []).append(r)
    groups = defaultdict(list)
    print("| model | batch | epochs | seed | tool | test accuracy | train loss | images/s (each epoch) |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(last):
        model, batch, tool, seed = key
        rs = last[key]
        final = rs[-1]
        ips = ", ".join(f"{r['images_per_second']:.0f}" for r in rs)
        print(f"| {model} | {batch} | {final['epoch']} | {seed} | {tool} | {final['test_accuracy']:.4f} | "
              f"{final['train_loss']:.4f} | {ips} |")
        groups[(model, batch, final["epoch"], tool)].append(final)
    print()
    print("| model | batch | epochs | tool | test accuracy, mean ± std (min–max) | train loss, mean | images/s, median (min–max) |")
    print("|---|---|---|---|---|---|---|")
    for (model, batch, epochs, tool), rs in sorted(groups.items()):
        acc = [r["test_accuracy"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        ips = [r["images_per_second"] for r in runs if r["model"] == model and r.get("batch", 32) == batch
               and r["tool"] == tool and r["seed"] in {x["seed"] for x in rs}]
        print(f"| {model} | {batch} | {epochs} | {tool} | {statistics.mean(acc):.4f} ± {sd:.4f} "
              f"({min(acc):.4f}–{max(acc):.4f}) | {statistics.mean(r['train_loss'] for r in rs):.4f} | "
              f"{statistics.median(ips):.0f} ({min(ips):.0f}–{max(ips):.0f}) |")


if __name__ == "__main__":
    main()
