#!/usr/bin/env python3
"""Train the reference model in Keras, as clampnet's `train` does, and print one JSON line per epoch.

    .venv-tf/bin/python tools/keras_train.py --preset none --epochs 3 --batch-size 32 --seed 0

Same model, data scaling, optimizer and presets as clampnet (see tools/make_keras_fixtures.py for the
preset definitions); Keras' own initialisation and shuffling, seeded with keras.utils.set_random_seed.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
from make_keras_fixtures import build, read_idx  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--preset", default="none", choices=["none", "l1l2", "clip", "unitnorm", "combo"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load = lambda name: read_idx(os.path.join(args.data, name))  # noqa: E731
    x = (load("train-images-idx3-ubyte.gz").astype(np.float32) / np.float32(255.0))[..., None]
    y = load("train-labels-idx1-ubyte.gz").astype(np.int64)
    xt = (load("t10k-images-idx3-ubyte.gz").astype(np.float32) / np.float32(255.0))[..., None]
    yt = load("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    keras.utils.set_random_seed(args.seed)
    model = build(args.preset)
    for epoch in range(1, args.epochs + 1):
        t = time.time()
        h = model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0)
        train_s = time.time() - t
        loss, acc = model.evaluate(xt, yt, batch_size=args.batch_size, verbose=0)
        print(json.dumps({"epoch": epoch, "train_loss": h.history["loss"][0], "train_accuracy": h.history["accuracy"][0],
                          "test_loss": loss, "test_accuracy": acc, "train_seconds": train_s,
                          "images_per_second": len(x) / train_s}), flush=True)


if __name__ == "__main__":
    main()
