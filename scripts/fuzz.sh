#!/usr/bin/env bash
# Fuzz the input readers for a bounded time each (not part of CI):
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Stable rustc accepts the nightly flags cargo-fuzz passes
# through RUSTC_BOOTSTRAP=1. Seeds come from tests/fixtures, assets and configs; a crash is saved under
# fuzz/artifacts/<target>/: copy it to tests/fuzz-regressions/<target>/ so the test suite keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/idx fuzz/corpus/checkpoint fuzz/corpus/config fuzz/corpus/keras fuzz/corpus/keras_h5 fuzz/corpus/keras_json
cp -n assets/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz fuzz/corpus/idx/ 2>/dev/null || true
cp -n tests/fixtures/keras_init.safetensors fuzz/corpus/checkpoint/ 2>/dev/null || true
cp -n configs/*.toml fuzz/corpus/config/ 2>/dev/null || true
cp -n tests/fixtures/keras/*.keras fuzz/corpus/keras/ 2>/dev/null || true
for f in tests/fixtures/keras/*.keras; do
    n=$(basename "$f" .keras)
    [ -e "fuzz/corpus/keras_h5/$n.h5" ] || unzip -p "$f" model.weights.h5 > "fuzz/corpus/keras_h5/$n.h5"
    [ -e "fuzz/corpus/keras_json/$n.json" ] || unzip -p "$f" config.json > "fuzz/corpus/keras_json/$n.json"
done
for t in idx checkpoint config keras keras_h5 keras_json; do
    echo "== fuzzing $t for ${secs}s"
    cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=300000 -rss_limit_mb=4096 2>&1 | grep -E "^#[0-9]+.*(DONE|pulse)|Done|ERROR|SUMMARY|crash|stat::" | tail -4
done
