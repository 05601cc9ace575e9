#!/usr/bin/env bash
# An 8-trial grid on this machine's adapter, side by side: `clampnet sweep run` (one process, one device,
# the 8 trials as the 8 models of one step: one set of dispatches for all) vs the same sweep with
# `--models-per-pass 1` (the trials in turn) vs the same 8 trials as 8 sequential `clampnet train`
# processes (each trial's own command line, from its command.txt), interleaved N times, the side that
# goes first alternating. A fourth side runs the sweep one trial at a time with `--jobs 2`: two trials
# at once, each in a process of its own.
# With TORCH_PY and/or JAX_PY set (a Python with torch / with jax and optax), each round also runs the
# peers that train the same 8 trials at once as stacked models: tools/bench_sweep_torch.py (torch.func
# vmap) and tools/bench_sweep_jax.py (jax.vmap in a jit-compiled scan), on their default device.
# Usage: tools/sweep_bench.sh [N=3] [OUT=/tmp/clampnet-sweep-bench]
# Prints one JSON object per round and the median and range of each side: wall seconds of the whole
# job, and the seconds of training alone (clampnet: the trials' train_seconds summed; the peers: their
# steady-state training after the first step or compilation).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
OUT=${2:-/tmp/clampnet-sweep-bench}
BIN=${BIN:-target/release/clampnet}
FLAGS=(--limit-train "${LIMIT_TRAIN:-2000}" --limit-test 1000 --epochs 1)
export RUST_LOG=warn
rm -rf "$OUT"
mkdir -p "$OUT"
cat >"$OUT/grid.toml" <<G
base = "$(pwd)/configs/none.toml"
seeds = [0, 1]
[axes]
"model.layers.0.kernel_regularizer.l1" = [0.0, 1e-3]
"model.layers.0.kernel_constraint" = ["none", { max_norm = { max_value = 2.0, axis = [0, 1, 2] } }]
G
now() { date +%s.%N; }
sweep_side() {
    local t0; t0=$(now)
    "$BIN" sweep run "$OUT/grid.toml" --out "$OUT/sweep-$1" "${FLAGS[@]}" 2>/dev/null
    echo "$(now) - $t0" | bc
}
turn_side() {
    local t0; t0=$(now)
    "$BIN" sweep run "$OUT/grid.toml" --out "$OUT/turn-$1" --models-per-pass 1 "${FLAGS[@]}" 2>/dev/null
    echo "$(now) - $t0" | bc
}
shards_side() {
    local t0; t0=$(now)
    "$BIN" sweep run "$OUT/grid.toml" --out "$OUT/jobs-$1" --jobs 2 --models-per-pass 1 "${FLAGS[@]}" 2>/dev/null
    echo "$(now) - $t0" | bc
}
processes_side() {
    mkdir -p "$OUT/solo-$1"
    local t0; t0=$(now)
    for cmd in "$OUT"/sweep-1/trials/*/command.txt; do
        id=$(basename "$(dirname "$cmd")")
        # the trial's own command line, writing elsewhere
        args=$(sed -e "s#--save [^ ]*#--save $OUT/solo-$1/$id.safetensors#" \
                   -e "s#--metrics [^ ]*#--metrics $OUT/solo-$1/$id.jsonl#" -e 's#^clampnet train ##' "$cmd")
        # shellcheck disable=SC2086
        "$BIN" train $args 2>/dev/null
    done
    echo "$(now) - $t0" | bc
}
s=(); u=(); p=(); h=(); st=(); ut=(); tt=(); jt=(); tw=(); jw=()
peer() { # python script -> "wall train" seconds
    "$1" "tools/$2" --trials 8 --limit-train "${LIMIT_TRAIN:-2000}" --limit-test 1000 --epochs 1 2>/dev/null \
        | python3 -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(r["total_seconds"], r["train_seconds"])'
}
for i in $(seq "$N"); do
    if [ $((i % 2)) = 1 ]; then
        a=$(sweep_side "$i"); d=$(turn_side "$i"); b=$(processes_side "$i"); c=$(shards_side "$i")
    else
        c=$(shards_side "$i"); b=$(processes_side "$i"); d=$(turn_side "$i"); a=$(sweep_side "$i")
    fi
    s+=("$a"); u+=("$d"); p+=("$b"); h+=("$c")
    # training seconds: the batched trials train at once (each reports the shared time), so one
    # trial's; the trials in turn, their sum
    st+=("$(python3 -c 'import json,glob,sys; print(max(sum(e["train_seconds"] for e in json.load(open(f))["epochs"]) for f in glob.glob(sys.argv[1] + "/trials/*/result.json")))' "$OUT/sweep-$i")")
    ut+=("$(python3 -c 'import json,glob,sys; print(sum(e["train_seconds"] for f in glob.glob(sys.argv[1] + "/trials/*/result.json") for e in json.load(open(f))["epochs"]))' "$OUT/turn-$i")")
    if [ -n "${TORCH_PY:-}" ]; then read -r w t < <(peer "$TORCH_PY" bench_sweep_torch.py); tw+=("$w"); tt+=("$t"); fi
    if [ -n "${JAX_PY:-}" ]; then read -r w t < <(peer "$JAX_PY" bench_sweep_jax.py); jw+=("$w"); jt+=("$t"); fi
    echo "{\"round\": $i, \"sweep_run_s\": $a, \"sweep_train_s\": ${st[-1]}, \"in_turn_s\": $d, \"in_turn_train_s\": ${ut[-1]}, \"train_processes_s\": $b, \"jobs2_s\": $c, \"torch_func_s\": \"${tw[*]: -1}\", \"torch_func_train_s\": \"${tt[*]: -1}\", \"jax_vmap_s\": \"${jw[*]: -1}\", \"jax_vmap_train_s\": \"${jt[*]: -1}\", \"order\": \"$([ $((i % 2)) = 1 ] && echo sweep,in-turn,processes,jobs2 || echo jobs2,processes,in-turn,sweep)\"}"
done
# the same trials (their statistics; tests/sweep.rs checks the bits)
for f in "$OUT"/solo-1/*.safetensors; do
    id=$(basename "$f" .safetensors)
    cmp -s <("$BIN" inspect "$f" --json 2>/dev/null) <("$BIN" inspect "$OUT/sweep-1/trials/$id/checkpoint.safetensors" --json 2>/dev/null) \
        || echo "warning: trial $id differs between the sweep and its process" >&2
    cmp -s <("$BIN" inspect "$f" --json 2>/dev/null) <("$BIN" inspect "$OUT/turn-1/trials/$id/checkpoint.safetensors" --json 2>/dev/null) \
        || echo "warning: trial $id differs between the sweep in turn and its process" >&2
done
python3 - "${s[*]}" "${u[*]}" "${p[*]}" "${h[*]}" "${st[*]}" "${ut[*]}" "${tw[*]}" "${tt[*]}" "${jw[*]}" "${jt[*]}" <<'PY'
import statistics, sys
names = ("sweep run (8 models per pass)", "sweep run --models-per-pass 1", "8 train processes",
         "sweep run --jobs 2 --models-per-pass 1", "sweep run (8 per pass), training alone",
         "sweep run --models-per-pass 1, training alone",
         "torch.func 8 stacked models", "torch.func, training alone", "jax.vmap 8 stacked models", "jax.vmap, training alone")
for name, xs in zip(names, sys.argv[1:]):
    v = [float(x) for x in xs.split()]
    if not v:
        continue
    print(f"{name}: median {statistics.median(v):.2f} s, range {min(v):.2f}-{max(v):.2f} s over {len(v)} runs: {', '.join(f'{x:.2f}' for x in v)}")
PY
