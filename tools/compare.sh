#!/usr/bin/env bash
# clampnet against a peer framework on this machine, same model, batch sizes, warm-up and steps,
# interleaved N times (the side that goes first alternating between rounds):
#   tools/compare.sh PEER [BATCH_SIZES=32,128] [STEPS=200] [N=3]
# PEER: keras | torch | torch-compile | torch-compile-ro | torch-cudagraph | jax
#   keras           tools/bench_keras.py (TensorFlow, its compiled train_step)
#   torch           tools/bench_torch.py --mode eager
#   torch-compile   tools/bench_torch.py --mode compile (torch.compile of the whole step)
#   torch-compile-ro  the same with --compile-mode reduce-overhead (CUDA graphs on a GPU)
#   torch-cudagraph tools/bench_torch.py --mode cudagraph (CUDA only)
#   jax             tools/bench_jax.py (a jit-compiled step, optax Adam)
# The peer's Python: TF_PY / TORCH_PY / JAX_PY, else .venv-tf / .venv-torch / .venv-jax in the repo (each
# script's header has the install command). BIN (default target/release/clampnet, built if missing).
# Prints one JSON line per run and, per batch size, every run of each side with its median and range,
# and the ratio of the medians (clampnet / peer).
set -euo pipefail
cd "$(dirname "$0")/.."
peer="${1:-keras}"
sizes="${2:-32,128}"
steps="${3:-200}"
n="${4:-3}"
args=()
case "$peer" in
    keras) py=${TF_PY:-.venv-tf/bin/python}; script=tools/bench_keras.py ;;
    torch) py=${TORCH_PY:-.venv-torch/bin/python}; script=tools/bench_torch.py; args=(--mode eager) ;;
    torch-compile) py=${TORCH_PY:-.venv-torch/bin/python}; script=tools/bench_torch.py; args=(--mode compile) ;;
    torch-compile-ro) py=${TORCH_PY:-.venv-torch/bin/python}; script=tools/bench_torch.py
        args=(--mode compile --compile-mode reduce-overhead) ;;
    torch-cudagraph) py=${TORCH_PY:-.venv-torch/bin/python}; script=tools/bench_torch.py; args=(--mode cudagraph) ;;
    jax) py=${JAX_PY:-.venv-jax/bin/python}; script=tools/bench_jax.py ;;
    *) echo "usage: tools/compare.sh keras|torch|torch-compile|torch-compile-ro|torch-cudagraph|jax [BATCH_SIZES] [STEPS] [N]" >&2
       exit 2 ;;
esac
[ -x "$py" ] || { echo "missing $py: see the header of $script for the install command" >&2; exit 1; }
BIN=${BIN:-target/release/clampnet}
[ -x "$BIN" ] || cargo build --release --quiet
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
ours() { RUST_LOG=warn "$BIN" bench --json --batch-sizes "$sizes" --steps "$steps" --warmup 20; }
theirs() { "$py" "$script" --batch-sizes "$sizes" --steps "$steps" --warmup 20 "${args[@]}" 2>/dev/null | tail -n1; }
runs=()
for i in $(seq "$n"); do
    if [ $((i % 2)) = 1 ]; then a=$(ours); b=$(theirs); else b=$(theirs); a=$(ours); fi
    echo "{\"round\": $i, \"when\": \"$(date -u +%FT%TZ)\", \"clampnet\": $a, \"peer\": $b}"
    runs+=("$a" "$b")
done
python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(r) for r in sys.argv[1:]]
ours, theirs = runs[0::2], runs[1::2]
print(f"clampnet on {ours[0]['adapter']} ({ours[0]['kernel_set']} kernels)\npeer: {theirs[0]['framework']}")
print("images/s per run (median, range):")
for i, r in enumerate(ours[0]["results"]):
    bs = r["batch_size"]
    a = [o["results"][i]["images_per_second"] for o in ours]
    b = [t["results"][i]["images_per_second"] for t in theirs]
    fmt = lambda v: ", ".join(f"{x:.0f}" for x in v)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"  batch {bs}: clampnet {fmt(a)} (median {ma:.0f}, {min(a):.0f}-{max(a):.0f}); "
          f"peer {fmt(b)} (median {mb:.0f}, {min(b):.0f}-{max(b):.0f}); clampnet/peer {ma / mb:.2f}")
PY
