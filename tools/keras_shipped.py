#!/usr/bin/env python3
"""Train one of clampnet's CIFAR-shaped shipped configs in Keras, on the same data, and print one JSON line
per epoch (the fields of `clampnet train --json` that compare: test_accuracy, test_loss, train_loss,
train_seconds, images_per_second).

    .venv-tf/bin/python tools/keras_shipped.py --model maxnorm_dropout_sgd --data /tmp/fashion32 \
        --limit-train 4000 --limit-test 2000 --epochs 2 --seed 0

The models are written out here exactly as the configs' comments state them (configs/<model>.toml);
Keras' own initialisation, dropout masks and shuffling, seeded with keras.utils.set_random_seed.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402
from make_fashion32 import read_idx  # noqa: E402

L, R, C = keras.layers, keras.regularizers, keras.constraints


def maxnorm_dropout_sgd():
    m = keras.Sequential([
        keras.Input((32, 32, 3)),
        L.Conv2D(32, 3, padding="same", activation="relu", kernel_constraint=C.MaxNorm(3, axis=[0, 1, 2])),
        L.Dropout(0.2),
        L.Conv2D(32, 3, padding="same", activation="relu", kernel_constraint=C.MaxNorm(3, axis=[0, 1, 2])),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(512, activation="relu", kernel_constraint=C.MaxNorm(3)),
        L.Dropout(0.5),
        L.Dense(10, activation="softmax"),
    ])
    m.compile(keras.optimizers.SGD(learning_rate=0.01, momentum=0.9), loss="categorical_crossentropy",
              metrics=["accuracy"])
    return m, True


def batchnorm_gap():
    conv = lambda f: L.Conv2D(f, 3, padding="same", use_bias=False, kernel_regularizer=R.L2(1e-4))  # noqa: E731
    m = keras.Sequential([
        keras.Input((32, 32, 3)),
        conv(32), L.BatchNormalization(), L.ReLU(),
        conv(32), L.BatchNormalization(), L.ReLU(),
        L.MaxPooling2D(2),
        conv(64), L.BatchNormalization(), L.ReLU(),
        L.MaxPooling2D(2),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax", kernel_regularizer=R.L2(1e-4)),
    ])
    lr = keras.optimizers.schedules.ExponentialDecay(1e-3, decay_steps=1000, decay_rate=0.9)
    m.compile(keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m, False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["maxnorm_dropout_sgd", "batchnorm_gap"])
    ap.add_argument("--data", default="/tmp/fashion32")
    ap.add_argument("--limit-train", type=int, default=60000)
    ap.add_argument("--limit-test", type=int, default=10000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    find = lambda stem: next(os.path.join(args.data, f) for f in sorted(os.listdir(args.data)) if f.startswith(stem))  # noqa: E731
    x = read_idx(find("train-images"))[:args.limit_train].astype(np.float32) / np.float32(255.0)
    y = read_idx(find("train-labels"))[:args.limit_train].astype(np.int64)
    xt = read_idx(find("t10k-images"))[:args.limit_test].astype(np.float32) / np.float32(255.0)
    yt = read_idx(find("t10k-labels"))[:args.limit_test].astype(np.int64)
    keras.utils.set_random_seed(args.seed)
    model, onehot = globals()[args.model]()
    if onehot:
        y, yt = keras.utils.to_categorical(y, 10), keras.utils.to_categorical(yt, 10)
    for epoch in range(1, args.epochs + 1):
        t = time.time()
        h = model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0)
        train_seconds = time.time() - t
        loss, acc = model.evaluate(xt, yt, batch_size=256, verbose=0)
        print(json.dumps({"epoch": epoch, "train_loss": h.history["loss"][0],
                          "train_accuracy": h.history["accuracy"][0], "test_loss": loss, "test_accuracy": acc,
                          "train_seconds": train_seconds, "images_per_second": len(x) / train_seconds,
                          "keras": keras.__version__, "backend": keras.backend.backend()}), flush=True)


if __name__ == "__main__":
    main()
