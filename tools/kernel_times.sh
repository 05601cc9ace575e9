#!/usr/bin/env bash
# Per-kernel GPU times of a step, the median of N `clampnet bench --kernels` runs (each 30 steps after 5 of
# warm-up) of one or more binaries, interleaved (A B A B ...) so that they share the machine's minutes:
#   tools/kernel_times.sh BATCH N BIN [BIN...]
# Prints, per binary, images/s of every run, the whole step's GPU time and each kernel's median and range
# (µs). Build an older commit's binary with tools/build_at.sh.
set -euo pipefail
batch=${1:?batch size}
n=${2:?runs per binary}
shift 2
[ $# -ge 1 ] || { echo "usage: tools/kernel_times.sh BATCH N BIN [BIN...]" >&2; exit 2; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for _ in $(seq "$n"); do
    for i in $(seq $#); do
        bin=${!i}
        RUST_LOG=warn "$bin" bench --batch-sizes "$batch" --steps 30 --warmup 5 --kernels --json >>"$out/$i.jsonl"
    done
done
for i in $(seq $#); do
    echo "== ${!i}"
    python3 - "$out/$i.jsonl" <<'PY'
import json, statistics as st, sys
rs = [json.loads(l)["results"][0] for l in open(sys.argv[1]) if l.strip()]
ips = [r["images_per_second"] for r in rs]
print("images/s: %s (median %.0f)" % (" ".join("%.0f" % v for v in ips), st.median(ips)))
g = [r["gpu_us_per_step"] for r in rs if r.get("gpu_us_per_step")]
if g:
    print("whole step in one pass (GPU): median %.0f us (%.0f-%.0f)" % (st.median(g), min(g), max(g)))
for k in range(len(rs[0]["kernels"])):
    v = [r["kernels"][k]["microseconds"] for r in rs]
    print("  %-34s %8.1f  (%.0f-%.0f)" % (rs[0]["kernels"][k]["kernel"], st.median(v), min(v), max(v)))
PY
done
