#!/usr/bin/env bash
# Sweeps on a lent GPU (issue 14's GPU measurement), one prepared run: N trials of the reference model
# as one `clampnet sweep run` (the trials as the models of one step), in turn (`--models-per-pass 1`),
# with `--jobs J`, one trial alone, and the stacked-model peers
# (tools/bench_sweep_torch.py: torch.func; tools/bench_sweep_jax.py: jax.vmap) on CUDA, interleaved
# ROUNDS times, every run a JSON line in $OUT/gpu_sweep.jsonl.
#
# Here (this machine), once:   tools/gpu_sweep.sh prepare
#   builds a release binary without debug info into .device/ (git-ignored), with the dataset and the
#   Vulkan/EGL loader packages the device machine lacks.
# There (the device tool):     run(command="bash tools/gpu_sweep.sh run", carry=[".device"], timeout_s=540)
#   TRIALS (32), JOBS (4), ROUNDS (2), LIMIT_TRAIN (10000), EPOCHS (1) set the sizes.
# Locally, as a dry run on lavapipe:   TRIALS=8 LIMIT_TRAIN=500 OUT=/tmp/g tools/gpu_sweep.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tools/device_env.sh
. tools/device_env.sh "${1:-}" gpu_sweep
OUT=${OUT:-/tmp/gpu-sweep}
mkdir -p "$OUT"
TRIALS=${TRIALS:-32} JOBS=${JOBS:-4} ROUNDS=${ROUNDS:-2} LIMIT_TRAIN=${LIMIT_TRAIN:-10000} EPOCHS=${EPOCHS:-1}
"$BIN" info 2>&1 | tee "$OUT/info.txt" | head -20
# the grid of tools/sweep_bench.sh, with TRIALS/4 seeds
seeds=$(python3 -c "print(list(range(max(1, $TRIALS // 4))))")
cat >"$OUT/grid.toml" <<G
base = "$PWD/configs/none.toml"
seeds = $seeds
[axes]
"model.layers.0.kernel_regularizer.l1" = [0.0, 1e-3]
"model.layers.0.kernel_constraint" = ["none", { max_norm = { max_value = 2.0, axis = [0, 1, 2] } }]
G
one_seed=$(mktemp -d)
sed "s/^seeds = .*/seeds = [0]/; s/^\"model.layers.0.kernel_regularizer.l1\" = .*/\"model.layers.0.kernel_regularizer.l1\" = [0.0]/; s/^\"model.layers.0.kernel_constraint\" = .*/\"model.layers.0.kernel_constraint\" = [\"none\"]/" "$OUT/grid.toml" >"$one_seed/grid.toml"
FLAGS=(--limit-train "$LIMIT_TRAIN" --limit-test 1000 --epochs "$EPOCHS")
now() { date +%s.%N; }
line() { echo "$1" | tee -a "$OUT/gpu_sweep.jsonl"; }
clampnet_side() { # name, grid, extra flags...
    local name=$1 grid=$2 dir; shift 2
    dir=$(mktemp -d)
    local t0; t0=$(now)
    "$BIN" sweep run "$grid" --out "$dir" "${FLAGS[@]}" "$@" 2>"$OUT/$name.err" || true
    local t1; t1=$(now)
    local n train
    n=$( (ls "$dir"/trials/*/result.json 2>/dev/null || true) | wc -l)
    train=$(python3 -c 'import json,glob,sys; print(sum(e["train_seconds"] for f in glob.glob(sys.argv[1] + "/trials/*/result.json") for e in json.load(open(f))["epochs"]))' "$dir")
    line "{\"round\": $r, \"side\": \"$name\", \"trials_done\": $n, \"wall_s\": $(echo "$t1 - $t0" | bc), \"train_s\": $train}"
}
peer_side() { # name, python, script
    local out
    out=$("$2" "tools/$3" --trials "$TRIALS" --limit-train "$LIMIT_TRAIN" --limit-test 1000 --epochs "$EPOCHS" 2>"$OUT/$1.err" | tail -n1) || true
    line "{\"round\": $r, \"side\": \"$1\", \"result\": ${out:-null}}"
}
for r in $(seq "$ROUNDS"); do
    clampnet_side "clampnet_1_trial" "$one_seed/grid.toml"
    clampnet_side "clampnet_${TRIALS}_trials" "$OUT/grid.toml"
    clampnet_side "clampnet_${TRIALS}_trials_in_turn" "$OUT/grid.toml" --models-per-pass 1
    clampnet_side "clampnet_${TRIALS}_trials_jobs_$JOBS" "$OUT/grid.toml" --jobs "$JOBS"
    peer_side "torch_func_$TRIALS" "$PY_TORCH" bench_sweep_torch.py
    peer_side "jax_vmap_$TRIALS" "$PY_JAX" bench_sweep_jax.py
done
echo "results: $OUT/gpu_sweep.jsonl"
