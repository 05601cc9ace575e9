#!/usr/bin/env bash
# clampnet against the strongest peers on a lent GPU (issue 16's GPU measurement), one prepared run:
# `clampnet bench --kernels` (per-kernel GPU times, the whole step's GPU time; also with the opt-in
# --gpu-tiles and --subgroups kernels, to decide their defaults) and the peers of the same
# model, batch sizes, warm-up and steps: PyTorch eager, torch.compile (default and reduce-overhead), a CUDA
# graph of the whole step with fused capturable Adam (tools/bench_torch.py), and a jit-compiled JAX step
# (tools/bench_jax.py), interleaved ROUNDS times, every run a JSON line in $OUT/gpu_bench.jsonl.
#
# Here (this machine), once:   tools/gpu_bench.sh prepare     (the same .device/ as tools/gpu_sweep.sh)
# There (the device tool):     run(command="bash tools/gpu_bench.sh run", carry=[".device"], timeout_s=540)
#   BATCH_SIZES (32,128,512), STEPS (200), ROUNDS (2) set the sizes.
# Locally, as a dry run on lavapipe:   BATCH_SIZES=32 STEPS=20 ROUNDS=1 OUT=/tmp/gb tools/gpu_bench.sh run
# The README's tables from the results (every run, medians and ranges, ratios and the issue's goals, the
# GPU's busy fraction, per-kernel times):   python3 tools/gpu_report.py $OUT/gpu_bench.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/device_env.sh
. tools/device_env.sh "${1:-}" gpu_bench
OUT=${OUT:-/tmp/gpu-bench}
mkdir -p "$OUT"
SIZES=${BATCH_SIZES:-32,128,512} STEPS=${STEPS:-200} ROUNDS=${ROUNDS:-2}
"$BIN" info 2>&1 | tee "$OUT/info.txt" | head -20
line() { echo "$1" | tee -a "$OUT/gpu_bench.jsonl"; }
side() { # name, command...
    local name=$1 out
    shift
    out=$("$@" 2>"$OUT/$name.err" | tail -n1) || true
    line "{\"round\": $r, \"side\": \"$name\", \"when\": \"$(date -u +%FT%TZ)\", \"result\": ${out:-null}}"
}
COMMON=(--batch-sizes "$SIZES" --steps "$STEPS" --warmup 20)
for r in $(seq "$ROUNDS"); do
    side clampnet "$BIN" bench --json --kernels "${COMMON[@]}"
    # the opt-in kernels, measured beside the default: tiled dense (bit-identical) and subgroup sums
    side clampnet_gpu_tiles "$BIN" bench --json --kernels --gpu-tiles "${COMMON[@]}"
    side clampnet_subgroups "$BIN" bench --json --kernels --subgroups "${COMMON[@]}"
    side torch_eager "$PY_TORCH" tools/bench_torch.py --mode eager "${COMMON[@]}"
    side torch_compile "$PY_TORCH" tools/bench_torch.py --mode compile "${COMMON[@]}"
    side torch_compile_reduce_overhead "$PY_TORCH" tools/bench_torch.py --mode compile --compile-mode reduce-overhead "${COMMON[@]}"
    side torch_cudagraph "$PY_TORCH" tools/bench_torch.py --mode cudagraph "${COMMON[@]}"
    side jax_jit "$PY_JAX" tools/bench_jax.py "${COMMON[@]}"
done
echo "results: $OUT/gpu_bench.jsonl"
python3 tools/gpu_report.py "$OUT/gpu_bench.jsonl" >"$OUT/report.md" || true
