#!/usr/bin/env python3
"""Keras golden values for every restriction clampnet offers (tests/fixtures/keras_restrictions*.safetensors).

    .venv-tf/bin/python tools/make_keras_restriction_fixtures.py

A small model (10x10x1 inputs: Conv2D(4, 3x3, relu) -> MaxPool2D(2) -> Flatten -> Dense(5, softmax)) keeps
the fixtures small. For each case -- every constraint with Keras' default axis and per-filter axes, every
regularizer on kernels and biases, weight decay, clipnorm / global_clipnorm / clipvalue -- Keras trains 3
steps of batch 8 from the same "hot" weights (large enough that norms and clips bind), and the file
stores the weights after steps 1 and 3, the losses Keras reports, and the clampnet TOML config that means
the same thing (metadata "config/<case>"), which the Rust tests parse and run.

Two more files use the reference model and Fashion-MNIST (first 24 training images):
  keras_clip_per_epoch.safetensors   one epoch of 3 steps (lr 0.01, from keras_hot_init), then the seed
                                     tutorial's clip of the conv kernel and bias to [-1, 1]
  keras_unitnorm_default.safetensors 3 steps with kernel_constraint=UnitNorm() (Keras' default axis 0)
"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))
import keras  # noqa: E402
from make_keras_fixtures import NAMES, ClipConstraint, read_idx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

OUT = "tests/fixtures"

# case name -> (conv args, dense args, optimizer args); values are (keras object, toml text)
def reg(l1=0.0, l2=0.0):
    if l1 and l2:
        k = keras.regularizers.l1_l2(l1=l1, l2=l2)
    elif l1:
        k = keras.regularizers.l1(l1)
    else:
        k = keras.regularizers.l2(l2)
    parts = ([f"l1 = {l1}"] if l1 else []) + ([f"l2 = {l2}"] if l2 else [])
    return k, "{ " + ", ".join(parts) + " }"


def axis_toml(axis):
    return "" if axis is None else f"axis = {list(axis) if isinstance(axis, (list, tuple)) else axis}"


def max_norm(v, axis=None):
    k = keras.constraints.MaxNorm(max_value=v) if axis is None else keras.constraints.MaxNorm(max_value=v, axis=axis)
    inner = ", ".join(x for x in [f"max_value = {v}", axis_toml(axis)] if x)
    return k, "{ max_norm = { " + inner + " } }"


def min_max_norm(lo, hi, rate, axis=None):
    kw = dict(min_value=lo, max_value=hi, rate=rate)
    if axis is not None:
        kw["axis"] = axis
    inner = ", ".join(x for x in [f"min_value = {lo}", f"max_value = {hi}", f"rate = {rate}", axis_toml(axis)] if x)
    return keras.constraints.MinMaxNorm(**kw), "{ min_max_norm = { " + inner + " } }"


def unit_norm(axis=None):
    k = keras.constraints.UnitNorm() if axis is None else keras.constraints.UnitNorm(axis=axis)
    return k, "{ unit_norm = { " + axis_toml(axis) + " } }"


def non_neg():
    return keras.constraints.NonNeg(), '"non_neg"'


def clip(lo, hi):
    return ClipConstraint(lo, hi), "{ clip = { min = " + str(lo) + ", max = " + str(hi) + " } }"


PER_FILTER = [0, 1, 2]
CASES = {
    "max_norm_default_axis": ({"kernel_constraint": max_norm(0.5)}, {}, {}),
    "max_norm_per_filter": ({"kernel_constraint": max_norm(0.9, PER_FILTER)}, {"kernel_constraint": max_norm(0.3)}, {}),
    "min_max_norm_default_axis": ({"kernel_constraint": min_max_norm(0.2, 0.5, 0.7)}, {}, {}),
    "min_max_norm_per_filter": ({"kernel_constraint": min_max_norm(1.2, 1.5, 1.0, PER_FILTER)}, {"bias_constraint": min_max_norm(0.1, 0.2, 0.5)}, {}),
    "unit_norm_default_axis": ({"kernel_constraint": unit_norm()}, {}, {}),
    "unit_norm_per_filter": ({"kernel_constraint": unit_norm(PER_FILTER)}, {"kernel_constraint": unit_norm(0)}, {}),
    "non_neg": ({"kernel_constraint": non_neg(), "bias_constraint": non_neg()}, {"bias_constraint": non_neg()}, {}),
    "clip": ({"bias_constraint": clip(-0.05, 0.05)}, {"kernel_constraint": clip(-0.2, 0.2)}, {}),
    "kernel_regularizers": ({"kernel_regularizer": reg(l1=0.01)}, {"kernel_regularizer": reg(l1=0.003, l2=0.02)}, {}),
    "bias_regularizers": ({"bias_regularizer": reg(l2=0.05), "kernel_regularizer": reg(l2=0.01)}, {"bias_regularizer": reg(l1=0.02)}, {}),
    "weight_decay": ({}, {}, {"weight_decay": 0.1}),
    "clipnorm": ({"kernel_regularizer": reg(l1=0.01)}, {}, {"clipnorm": 0.05}),
    "global_clipnorm": ({}, {}, {"global_clipnorm": 0.05}),
    "clipvalue": ({}, {}, {"clipvalue": 0.002}),
}


def small_model(conv, dense, opt, lr):
    model = keras.Sequential([
        keras.Input((10, 10, 1)),
        keras.layers.Conv2D(4, (3, 3), activation="relu", **{k: v[0] for k, v in conv.items()}),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(5, activation="softmax", **{k: v[0] for k, v in dense.items()}),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, **opt), loss="sparse_categorical_crossentropy")
    return model


def toml(conv, dense, opt, lr):
    layer = lambda extra: "".join(f"{k} = {v[1]}\n" for k, v in extra.items())  # noqa: E731
    opts = "".join(f"{k} = {v}\n" for k, v in opt.items())
    return (
        "[model]\ninput = [10, 10, 1]\n\n"
        '[[model.layers]]\ntype = "conv2d"\nfilters = 4\nkernel_size = 3\nactivation = "relu"\n' + layer(conv) + "\n"
        '[[model.layers]]\ntype = "max_pool2d"\npool_size = 2\n\n[[model.layers]]\ntype = "flatten"\n\n'
        '[[model.layers]]\ntype = "dense"\nunits = 5\nactivation = "softmax"\n' + layer(dense) + "\n"
        f"[optimizer]\nlearning_rate = {lr}\n" + opts
    )


def main():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(8, 10, 10, 1), dtype=np.uint8)
    x = images.astype(np.float32) / np.float32(255.0)
    y = rng.integers(0, 5, size=8).astype(np.int64)
    keras.utils.set_random_seed(1)
    base = small_model({}, {}, {}, 1e-3)
    hot = [w.copy() for w in base.get_weights()]
    hot[0] = hot[0] * np.float32(4.0)
    hot[1] = np.array([0.3, -0.2, 0.1, -0.4], np.float32)
    hot[3] = np.array([0.1, -0.1, 0.2, 0.0, -0.3], np.float32)
    lr = 0.01
    out = {"x": x, "images": images.astype(np.float32), "y": y.astype(np.float32)}
    out.update({f"init/{n}": w for n, w in zip(NAMES, hot)})
    meta = {}
    for case, (conv, dense, opt) in CASES.items():
        model = small_model(conv, dense, opt, lr)
        model.set_weights(hot)
        losses = []
        for step in range(1, 4):
            h = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
            losses.append(h.history["loss"][0])
            if step in (1, 3):
                for n, w in zip(NAMES, model.get_weights()):
                    out[f"{case}/step{step}/{n}"] = w
        out[f"{case}/losses"] = np.array(losses, np.float32)
        meta[f"config/{case}"] = toml(conv, dense, opt, lr)
        print(case, losses)
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}, os.path.join(OUT, "keras_restrictions.safetensors"), metadata=meta)

    # reference model, real images: the tutorial's per-epoch clip, and UnitNorm() with the default axis
    from make_keras_fixtures import build
    data = "/usr/share/datasets/fashion-mnist"
    img = read_idx(os.path.join(data, "train-images-idx3-ubyte.gz"))[:24]
    lbl = read_idx(os.path.join(data, "train-labels-idx1-ubyte.gz"))[:24].astype(np.int64)
    xr = (img.astype(np.float32) / np.float32(255.0))[..., None]
    hot_ref = [load_file(os.path.join(OUT, "keras_hot_init.safetensors"))[n] for n in NAMES]
    model = build("none")
    model.optimizer.learning_rate = 0.01
    model.set_weights(hot_ref)
    model.fit(xr, lbl, batch_size=8, epochs=1, shuffle=False, verbose=0)   # one epoch = 3 steps
    conv = model.layers[0]
    k, b = conv.get_weights()
    conv.set_weights([np.clip(k, -1, 1), np.clip(b, -1, 1)])                 # the tutorial's clip_weights
    save_file({f"step3/{n}": np.ascontiguousarray(w, np.float32) for n, w in zip(NAMES, model.get_weights())},
              os.path.join(OUT, "keras_clip_per_epoch.safetensors"))

    init = [load_file(os.path.join(OUT, "keras_init.safetensors"))[n] for n in NAMES]
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, (3, 3), activation="relu", kernel_constraint=keras.constraints.UnitNorm()),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    model.set_weights(init)
    for _ in range(3):
        model.fit(xr[:8], lbl[:8], batch_size=8, epochs=1, shuffle=False, verbose=0)
    save_file({f"step3/{n}": np.ascontiguousarray(w, np.float32) for n, w in zip(NAMES, model.get_weights())},
              os.path.join(OUT, "keras_unitnorm_default.safetensors"))
    k = model.get_weights()[0]
    print("unit_norm default axis: squared filter norms", np.round((k ** 2).sum(axis=(0, 1, 2))[:4], 4))


if __name__ == "__main__":
    main()
