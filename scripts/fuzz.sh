#!/usr/bin/env bash
# Fuzz the three input readers for a bounded time each (not part of CI):
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz`). Stable rustc accepts the nightly flags cargo-fuzz passes
# through RUSTC_BOOTSTRAP=1. Seeds come from tests/fixtures, assets and configs; a crash is saved under
# fuzz/artifacts/<target>/: copy it to tests/fuzz-regressions/<target>/ so the test suite keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/idx fuzz/corpus/checkpoint fuzz/corpus/config
cp -n assets/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz fuzz/corpus/idx/ 2>/dev/null || true
cp -n tests/fixtures/keras_init.safetensors fuzz/corpus/checkpoint/ 2>/dev/null || true
cp -n configs/*.toml fuzz/corpus/config/ 2>/dev/null || true
for t in idx checkpoint config; do
    echo "== fuzzing $t for ${secs}s"
    cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 2>&1 | grep -E "^#[0-9]+.*(DONE|pulse)|Done|ERROR|SUMMARY|crash|stat::" | tail -4
done
