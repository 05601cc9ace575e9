#!/usr/bin/env bash
# clampnet against a peer framework, back to back on this machine, same model and batch sizes:
#   tools/compare.sh keras|torch [BATCH_SIZES] [STEPS]
# Peers run from .venv-tf (keras: pip install tensorflow-cpu numpy) or .venv-torch (torch: pip install
# torch numpy). Prints both tables and the ratio clampnet / peer per batch size.
set -euo pipefail
cd "$(dirname "$0")/.."
peer="${1:-keras}"
sizes="${2:-32,128}"
steps="${3:-200}"
case "$peer" in
    keras) py=.venv-tf/bin/python; script=tools/bench_keras.py ;;
    torch) py=.venv-torch/bin/python; script=tools/bench_torch.py ;;
    *) echo "usage: tools/compare.sh keras|torch [BATCH_SIZES] [STEPS]" >&2; exit 2 ;;
esac
[ -x "$py" ] || { echo "missing $py: see the header of $script for the install command" >&2; exit 1; }
cargo build --release --quiet
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
ours=$(RUST_LOG=warn target/release/clampnet bench --json --batch-sizes "$sizes" --steps "$steps")
theirs=$("$py" "$script" --batch-sizes "$sizes" --steps "$steps")
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"clampnet on {a['adapter']}\npeer: {b['framework']}")
print(f"{'batch':>6} {'clampnet img/s':>15} {'peer img/s':>12} {'ratio':>7}")
for r, s in zip(a["results"], b["results"]):
    print(f"{r['batch_size']:>6} {r['images_per_second']:>15.0f} {s['images_per_second']:>12.0f} {r['images_per_second'] / s['images_per_second']:>7.2f}")
PY
