#!/usr/bin/env bash
# Two builds' training speed side by side: `clampnet bench --json` of BASE and NEW, interleaved
# (BASE NEW BASE NEW ...) for ROUNDS rounds, so that both see the same minutes of a machine whose speed
# drifts; prints every run and, per batch size, the median and range of each and the ratio of medians.
#   tools/bench_ab.sh [BASE [NEW [ROUNDS [BATCH_SIZES [STEPS]]]]]
#   defaults: c78e7c9 (before the op-module refactor), . (this working tree), 3, 32,128,512, 200
# Runs are written to target/bitident/bench_ab.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-c78e7c9}
new=${2:-.}
rounds=${3:-3}
sizes=${4:-32,128,512}
steps=${5:-200}
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
a=$(tools/build_at.sh "$base")
b=$(tools/build_at.sh "$new")
out=target/bitident/bench_ab.jsonl
: >"$out"
for r in $(seq 1 "$rounds"); do
    for side in base new; do
        if [ $side = base ]; then bin=$a; else bin=$b; fi
        "$bin" bench --batch-sizes "$sizes" --steps "$steps" --json 2>/dev/null |
            python3 -c "import json,sys; d=json.load(sys.stdin); d['side']='$side'; d['round']=$r; print(json.dumps(d))" >>"$out"
    done
done
python3 - "$out" "$base" "$new" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print(f"base {sys.argv[2]} vs new {sys.argv[3]}: images/s, every run in order (base, new per round)")
sizes = [r["batch_size"] for r in runs[0]["results"]]
for bs in sizes:
    v = {s: [next(x["images_per_second"] for x in r["results"] if x["batch_size"] == bs)
             for r in runs if r["side"] == s] for s in ("base", "new")}
    med = {s: statistics.median(v[s]) for s in v}
    print(f"batch {bs}: base " + " ".join(f"{x:,.0f}" for x in v["base"])
          + f" | new " + " ".join(f"{x:,.0f}" for x in v["new"]))
    print(f"  median (range): base {med['base']:,.0f} ({min(v['base']):,.0f}-{max(v['base']):,.0f}), "
          f"new {med['new']:,.0f} ({min(v['new']):,.0f}-{max(v['new']):,.0f}), new/base {med['new'] / med['base']:.3f}")
PY
