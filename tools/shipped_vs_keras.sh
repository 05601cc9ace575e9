#!/usr/bin/env bash
# The two CIFAR-shaped shipped configs in clampnet (lavapipe) and in Keras (TensorFlow CPU) over 3 seeds,
# interleaved (for each seed and model: clampnet, then Keras, in the same minutes), on Fashion-MNIST
# padded to 32x32x3 (tools/make_fashion32.py). One JSON line per run and epoch in OUT/runs.jsonl.
#   [MODELS="a b"] [SEEDS="0 1 2"] tools/shipped_vs_keras.sh [OUT] [LIMIT_TRAIN] [LIMIT_TEST] [EPOCHS] [BATCH]
# (runs are appended to OUT/runs.jsonl)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/shipped}; NTRAIN=${2:-4000}; NTEST=${3:-2000}; EPOCHS=${4:-2}; BATCH=${5:-32}
MODELS=${MODELS:-maxnorm_dropout_sgd batchnorm_gap}; SEEDS=${SEEDS:-0 1 2}
PY=${PYTHON:-.venv-tf/bin/python}
mkdir -p "$OUT"
[ -e /tmp/fashion32/train-images-idx4-ubyte.gz ] || "$PY" tools/make_fashion32.py --out /tmp/fashion32
cargo build --release --quiet
for seed in $SEEDS; do
  for model in $MODELS; do
    target/release/clampnet train --config configs/$model.toml --data /tmp/fashion32 --limit-train "$NTRAIN" \
      --limit-test "$NTEST" --epochs "$EPOCHS" --batch-size "$BATCH" --seed "$seed" --json --quiet \
      | jq -c --arg m "$model" --argjson s "$seed" --argjson b "$BATCH" '{tool: "clampnet", model: $m, seed: $s, batch: $b, epoch, test_accuracy, test_loss, train_loss, train_seconds, images_per_second}' >> "$OUT/runs.jsonl"
    "$PY" tools/keras_shipped.py --model "$model" --data /tmp/fashion32 --limit-train "$NTRAIN" \
      --limit-test "$NTEST" --epochs "$EPOCHS" --batch-size "$BATCH" --seed "$seed" \
      | jq -c --arg m "$model" --argjson s "$seed" --argjson b "$BATCH" '{tool: "keras", model: $m, seed: $s, batch: $b, epoch, test_accuracy, test_loss, train_loss, train_seconds, images_per_second}' >> "$OUT/runs.jsonl"
    tail -n "$((2 * EPOCHS))" "$OUT/runs.jsonl"
  done
done
