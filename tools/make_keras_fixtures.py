#!/usr/bin/env python3
"""Write the Keras golden values that clampnet's tests compare against (tests/fixtures/).

Run from the repository root (TensorFlow installs from PyPI):
    python3 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu numpy safetensors
    .venv-tf/bin/python tools/make_keras_fixtures.py [--data /usr/share/datasets/fashion-mnist]

It takes the first 8 training images of Fashion-MNIST, builds the reference model
Conv2D(32, 3x3, relu) -> MaxPool2D(2) -> Flatten -> Dense(10, softmax) with Keras' own seeded
glorot-uniform initialisation, and for every preset (none, l1l2, clip, unitnorm, combo) records,
from the SAME initial weights: Adam (Keras defaults) weights after 1 and 3 steps of batch 8, and the loss
Keras reports for each step. Also the forward pass (softmax outputs) and the data-loss gradients at the
initial weights. Files:
  keras_init.safetensors    the initial weights, Keras names and layouts (loadable with --init)
  keras_common.safetensors  x (8,28,28,1) float32, y (8,), probs (8,10), grad/<tensor>, data_loss
  keras_<preset>.safetensors  step1/<tensor>, step3/<tensor>, losses (3,)
  keras_hot_init.safetensors, keras_hot_<preset>.safetensors: the same from "hot" weights (conv kernel x8,
    conv bias +-1.5) with lr 0.01, so that clipping and the norms bind from the first step
"""
import argparse
import gzip
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

NAMES = ["conv2d.kernel", "conv2d.bias", "dense.kernel", "dense.bias"]


def read_idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class ClipConstraint(keras.constraints.Constraint):
    """The seed tutorial's clip_by_value, as a per-step constraint."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __call__(self, w):
        return keras.ops.clip(w, self.lo, self.hi)


def build(preset):
    conv = {}
    dense = {}
    if preset == "l1l2":
        conv["kernel_regularizer"] = keras.regularizers.l1(0.01)
        dense["kernel_regularizer"] = keras.regularizers.l2(0.01)
    if preset in ("clip", "combo"):
        conv["kernel_constraint"] = ClipConstraint(-1.0, 1.0)
        conv["bias_constraint"] = ClipConstraint(-1.0, 1.0)
    if preset == "combo":
        conv["kernel_regularizer"] = keras.regularizers.l2(0.01)
    if preset == "unitnorm":
        conv["kernel_constraint"] = keras.constraints.UnitNorm(axis=[0, 1, 2])
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu", **conv),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax", **dense),
    ])
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default="tests/fixtures")
    args = ap.parse_args()
    img = read_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz"))[:8]
    lbl = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz"))[:8]
    x = (img.astype(np.float32) / np.float32(255.0)).reshape(8, 28, 28, 1)
    y = lbl.astype(np.int64)

    keras.utils.set_random_seed(0)
    base = build("none")
    init = [w.copy() for w in base.get_weights()]
    save_file({n: np.ascontiguousarray(w, np.float32) for n, w in zip(NAMES, init)},
              os.path.join(args.out, "keras_init.safetensors"))

    # forward and data-loss gradients at the initial weights
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        probs = base(xt, training=True)
        loss = keras.losses.SparseCategoricalCrossentropy()(tf.constant(y), probs)
    grads = tape.gradient(loss, base.trainable_weights)
    common = {"x": x, "y": y.astype(np.float32), "probs": probs.numpy(), "data_loss": np.array([loss.numpy()], np.float32)}
    for n, g in zip(NAMES, grads):
        common["grad/" + n] = g.numpy()
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in common.items()},
              os.path.join(args.out, "keras_common.safetensors"))

    hot = [w.copy() for w in init]
    hot[0] = hot[0] * np.float32(8.0)
    hot[1] = np.where(np.arange(32) % 2 == 0, 1.5, -1.5).astype(np.float32)
    save_file({n: np.ascontiguousarray(w, np.float32) for n, w in zip(NAMES, hot)},
              os.path.join(args.out, "keras_hot_init.safetensors"))

    for prefix, weights, lr in (("keras", init, 1e-3), ("keras_hot", hot, 1e-2)):
        for preset in ["none", "l1l2", "clip", "unitnorm", "combo"]:
            model = build(preset)
            model.optimizer.learning_rate = lr
            model.set_weights(weights)
            out = {}
            losses = []
            for step in range(1, 4):
                h = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
                losses.append(h.history["loss"][0])
                if step == 3 or (step == 1 and prefix == "keras"):
                    for n, w in zip(NAMES, model.get_weights()):
                        out[f"step{step}/{n}"] = w
            out["losses"] = np.array(losses, np.float32)
            save_file({k: np.ascontiguousarray(v, np.float32) for k, v in out.items()},
                      os.path.join(args.out, f"{prefix}_{preset}.safetensors"))
            print(prefix, preset, "losses", losses)


if __name__ == "__main__":
    main()
