#!/usr/bin/env python3
"""Keras (TensorFlow) peer of `clampnet bench`: the reference model, the same batch sizes, steady-state
training images/s with graph tracing and warm-up excluded. One JSON object on stdout.

    python3 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu numpy
    .venv-tf/bin/python tools/bench_keras.py --batch-sizes 32,128,512 --steps 200 --warmup 20
"""
import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="32,128,512")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--filters", type=int, default=32)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(args.filters, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        n = bs * args.steps
        x = rng.integers(0, 256, size=(n, 28, 28, 1)).astype(np.float32) / np.float32(255.0)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        model.fit(x[: bs * args.warmup], y[: bs * args.warmup], batch_size=bs, epochs=1, shuffle=True, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=bs, epochs=1, shuffle=True, verbose=0)
        secs = time.perf_counter() - start
        results.append({"batch_size": bs, "images_per_second": n / secs, "ms_per_step": 1e3 * secs / args.steps,
                        "seconds_per_60k_epoch": 60000 * secs / n})
    print(json.dumps({"framework": f"keras {keras.__version__} / tensorflow {tf.__version__} (CPU)",
                      "threads": os.cpu_count(), "steps": args.steps, "warmup": args.warmup, "results": results}))


if __name__ == "__main__":
    main()
