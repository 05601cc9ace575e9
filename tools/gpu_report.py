#!/usr/bin/env python3
"""The README's tables from a tools/gpu_bench.sh run (its gpu_bench.jsonl), every run shown:

  python3 tools/gpu_report.py OUT/gpu_bench.jsonl > report.md

- images/s of every side (clampnet, its opt-in --gpu-tiles and --subgroups runs, each peer) at each batch
  size: every round's run, the median and the range;
- clampnet's median over each peer's median, and the issue's goals checked against the best compiled
  peer (torch.compile, its reduce-overhead mode, the CUDA graph, JAX): at least 2x at batch 32, at least
  1x at batch 512;
- the fraction of clampnet's step the GPU is busy (the whole step's GPU time in one pass over the
  step's wall time, medians);
- per-kernel GPU times (medians over rounds) of clampnet and its two opt-in variants side by side.
A side whose run failed (no JSON) is listed as failed, with its round.
"""
import json
import statistics as st
import sys
from collections import defaultdict

COMPILED = ["torch_compile", "torch_compile_reduce_overhead", "torch_cudagraph", "jax_jit"]
CLAMPNET = ["clampnet", "clampnet_gpu_tiles", "clampnet_subgroups"]


def fmt(v):
    return f"{v:,.0f}"


def main(path):
    runs = defaultdict(lambda: defaultdict(list))  # side -> batch -> [images/s]
    kernels = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))  # side -> batch -> kernel -> [us]
    busy = defaultdict(lambda: defaultdict(list))  # side -> batch -> [fraction]
    failed, adapter, frameworks, notes = [], None, {}, []
    # what each clampnet side asked for, to check that its run had it (bench's JSON says)
    wants = {"clampnet_gpu_tiles": "gpu_tiles", "clampnet_subgroups": "subgroups"}
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        rec = json.loads(line)
        side, res = rec["side"], rec.get("result")
        if not res or "results" not in res:
            failed.append(f"{side} (round {rec.get('round')})")
            continue
        if side.startswith("clampnet"):
            adapter = adapter or res.get("adapter")
            if side in wants and not res.get(wants[side]):
                notes.append(f"{side} ran without {wants[side]}: the adapter lacks it, or the binary "
                             "predates it")
            if side != "clampnet" and res.get("kernel_set") == "cpu":
                notes.append(f"{side} ran the cpu kernel set, where the opt-in kernels do not apply")
        else:
            frameworks[side] = res.get("framework", side)
        for r in res["results"]:
            b = r["batch_size"]
            runs[side][b].append(r["images_per_second"])
            for k in r.get("kernels") or []:
                # the opt-in variants' rows beside their default kernel's
                base = k["kernel"].replace("TiledGpu", "Gpu").replace("GpuSubgroups", "Gpu")
                kernels[side][b][base].append(k["microseconds"])
            g = r.get("gpu_us_per_step")
            if g and r.get("ms_per_step"):
                busy[side][b].append(g / (r["ms_per_step"] * 1000.0))
    batches = sorted({b for s in runs.values() for b in s})
    sides = [s for s in CLAMPNET if s in runs] + sorted(s for s in runs if s not in CLAMPNET)
    med = {s: {b: st.median(v) for b, v in runs[s].items()} for s in sides}

    print(f"Adapter: {adapter}\n")
    print("| images/s | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for s in sides:
        cells = []
        for b in batches:
            v = runs[s].get(b)
            cells.append(
                f"{' '.join(fmt(x) for x in v)} (median {fmt(st.median(v))}, {fmt(min(v))}–{fmt(max(v))})"
                if v else "—"
            )
        print(f"| {frameworks.get(s, s)} | " + " | ".join(cells) + " |")
    if failed:
        print("\nFailed runs: " + ", ".join(failed))
    for n in dict.fromkeys(notes):
        print(f"\nNote: {n}.")

    print("\n| clampnet / peer (medians) | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|" + "---|" * len(batches))
    for s in sides:
        if s == "clampnet":
            continue
        label = frameworks.get(s, s) if s not in CLAMPNET else f"{s} (the default over this opt-in)"
        cells = [
            f"{med['clampnet'][b] / med[s][b]:.2f}" if b in med.get("clampnet", {}) and b in med[s] else "—"
            for b in batches
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")

    compiled = [s for s in COMPILED if s in med]
    if "clampnet" in med and compiled:
        print()
        for b, goal in ((32, 2.0), (512, 1.0)):
            best = max(compiled, key=lambda s: med[s].get(b, 0))
            if b not in med["clampnet"] or b not in med[best]:
                continue
            ratio = med["clampnet"][b] / med[best][b]
            verdict = "met" if ratio >= goal else "missed"
            print(f"- Goal at batch {b} (at least {goal:g}x the best compiled peer, {frameworks[best]}): "
                  f"{ratio:.2f}x, {verdict}.")

    if any(busy[s] for s in CLAMPNET):
        print("\n| GPU busy (GPU time of a step / its wall time, median) | "
              + " | ".join(f"batch {b}" for b in batches) + " |")
        print("|---|" + "---|" * len(batches))
        for s in CLAMPNET:
            if busy[s]:
                cells = [f"{st.median(busy[s][b]):.0%}" if busy[s].get(b) else "—" for b in batches]
                print(f"| {s} | " + " | ".join(cells) + " |")

    for b in batches:
        present = [s for s in CLAMPNET if kernels[s].get(b)]
        if not present:
            continue
        names = []
        for s in present:
            names += [k for k in kernels[s][b] if k not in names]
        print(f"\nPer kernel at batch {b}, µs per step (median over rounds; an opt-in variant on its "
              "default kernel's row):\n")
        print("| kernel | " + " | ".join(present) + " |")
        print("|---|" + "---|" * len(present))
        for k in names:
            cells = [f"{st.median(kernels[s][b][k]):.1f}" if kernels[s][b].get(k) else "—" for s in present]
            print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: tools/gpu_report.py OUT/gpu_bench.jsonl")
    main(sys.argv[1])
