#!/usr/bin/env python3
"""Write the .keras fixtures that clampnet's CLI-level parity tests train (tests/fixtures/keras/).

Run from the repository root (TensorFlow and Keras 3 from PyPI):
    python3 -m venv .venv-tf && .venv-tf/bin/pip install tensorflow-cpu numpy safetensors
    .venv-tf/bin/python tools/make_keras_file_fixtures.py [--data /usr/share/datasets/fashion-mnist]

Each model is built, compiled with its optimizer and loss, and saved by Keras itself as <name>.keras with
its initial weights (Keras' seeded initializers; some kernels scaled up so that constraints bind from
the first step). Then Keras trains it 3 steps (3 epochs of one batch of the first 8 Fashion-MNIST training
images, no shuffling) and <name>.expected.safetensors records the weights after the 3 steps under
clampnet's names (<layer>.kernel, <layer>.bias) and the 3 losses Keras reported (`losses`).
Together the files cover every layer class, regularizer, constraint, optimizer (Adam, AdamW, SGD,
RMSprop and their options) and learning-rate schedule clampnet reads from Keras files.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from clampnet_keras import ClipByValue  # noqa: E402

L, R, C = keras.layers, keras.regularizers, keras.constraints


def read_idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def reference_l1l2():
    """The reference model, every regularizer class, Adam's defaults."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, (3, 3), activation="relu", kernel_regularizer=R.L1(0.01)),
        L.MaxPooling2D((2, 2)),
        L.Flatten(),
        L.Dense(10, activation="softmax", kernel_regularizer=R.L2(0.01),
                bias_regularizer=R.L1L2(l1=0.001, l2=0.002)),
    ])
    return m, keras.optimizers.Adam(), {}


def two_conv():
    """Named layers, same and valid padding, a linear conv, a hidden dense layer, the norm constraints,
    non_neg, and Adam with every setting changed and clipnorm."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, padding="same", activation="relu", name="features",
                 kernel_constraint=C.MaxNorm(1.5, axis=[0, 1, 2]), bias_constraint=C.NonNeg()),
        L.MaxPooling2D(2, name="pool_a"),
        L.Conv2D(6, 3, padding="valid", activation="linear", name="mixer",
                 kernel_constraint=C.UnitNorm(axis=[0, 1, 2]),
                 kernel_regularizer=R.L1L2(l1=0.001, l2=0.01)),
        L.MaxPooling2D(2, name="pool_b"),
        L.Flatten(name="flat"),
        L.Dense(16, activation="relu", name="hidden",
                kernel_constraint=C.MinMaxNorm(0.5, 1.0, rate=0.7, axis=0), bias_regularizer=R.L2(0.01)),
        L.Dense(10, activation="softmax", name="probs"),
    ], name="two_conv")
    opt = keras.optimizers.Adam(learning_rate=0.003, beta_1=0.8, beta_2=0.99, epsilon=1e-6, clipnorm=1.0)
    return m, opt, {"features": 4.0}


def clip_decay():
    """A Functional model (one chain), clampnet's ClipByValue, a 5x5 conv, 3x3 pooling, Adam with
    weight decay and global_clipnorm."""
    x = keras.Input((28, 28, 1))
    h = L.Conv2D(4, 5, activation="relu", kernel_constraint=ClipByValue(-0.2, 0.2),
                 bias_constraint=ClipByValue(-0.05, 0.05))(x)
    h = L.MaxPooling2D(3)(h)
    h = L.Flatten()(h)
    y = L.Dense(10, activation="softmax", kernel_constraint=C.NonNeg())(h)
    m = keras.Model(x, y, name="clip_decay")
    opt = keras.optimizers.Adam(learning_rate=0.01, weight_decay=0.01, global_clipnorm=0.5)
    return m, opt, {"conv2d": 3.0}


def dense_clipvalue():
    """No conv: flatten first, two dense layers, Adam's clipvalue."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Flatten(),
        L.Dense(32, activation="relu", kernel_regularizer=R.L1(0.001)),
        L.Dense(10, activation="softmax"),
    ])
    return m, keras.optimizers.Adam(learning_rate=0.002, clipvalue=0.001), {}


def small_conv(**dense):
    return [
        keras.Input((28, 28, 1)),
        L.Conv2D(6, 3, activation="relu"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(10, activation="softmax", **dense),
    ]


S = keras.optimizers.schedules


def sgd_nesterov_exponential():
    """SGD with nesterov momentum and weight decay, an ExponentialDecay schedule, max_norm."""
    m = keras.Sequential(small_conv(kernel_constraint=C.MaxNorm(0.5)))
    lr = S.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)
    return m, keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=0.01), {}


def sgd_piecewise():
    """Plain SGD (no momentum slot) on a PiecewiseConstantDecay schedule (staircase), L1."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Flatten(),
        L.Dense(16, activation="relu", kernel_regularizer=R.L1(0.001)),
        L.Dense(10, activation="softmax"),
    ])
    lr = S.PiecewiseConstantDecay([0, 1], [0.1, 0.05, 0.01])
    return m, keras.optimizers.SGD(lr), {}


def rmsprop_centered_cosine():
    """RMSprop centered with momentum and clipnorm on a CosineDecay with linear warmup."""
    m = keras.Sequential(small_conv())
    lr = S.CosineDecay(0.001, decay_steps=4, alpha=0.1, warmup_target=0.003, warmup_steps=1)
    return m, keras.optimizers.RMSprop(lr, rho=0.8, momentum=0.5, centered=True, clipnorm=1.0), {}


def rmsprop_inverse_time():
    """RMSprop's defaults but epsilon, an InverseTimeDecay schedule, unit_norm on the dense kernel."""
    m = keras.Sequential(small_conv(kernel_constraint=C.UnitNorm(axis=0)))
    lr = S.InverseTimeDecay(0.002, decay_steps=1, decay_rate=0.5, staircase=True)
    return m, keras.optimizers.RMSprop(lr, epsilon=1e-6), {}


def adamw_cosine():
    """AdamW (decoupled weight decay) on a CosineDecay schedule, an L2 bias penalty."""
    m = keras.Sequential(small_conv(bias_regularizer=R.L2(0.01)))
    lr = S.CosineDecay(0.004, decay_steps=3, alpha=0.0)
    return m, keras.optimizers.AdamW(lr, weight_decay=0.05), {}


def dropout_injected():
    """Dropout after a conv and after a hidden dense layer (one with its own seed). Keras trains a copy
    whose Dropout layers apply clampnet's counter-based masks (injected: Keras' own random masks cannot
    be matched), so that the 3 steps are comparable; the .keras file holds plain Dropout layers."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(6, 3, activation="relu"),
        L.Dropout(0.3),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(16, activation="relu"),
        L.Dropout(0.5, seed=7),
        L.Dense(10, activation="softmax"),
    ])
    return m, keras.optimizers.Adam(learning_rate=0.003), {}


def categorical_smoothing():
    """categorical_crossentropy on one-hot labels with label_smoothing, from logits (a linear last layer)."""
    m = keras.Sequential(small_conv())
    m.layers[-1].activation = keras.activations.linear
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    return m, keras.optimizers.Adam(learning_rate=0.003), {}, loss


def sparse_from_logits():
    """SparseCategoricalCrossentropy(from_logits=True) on a linear last layer: the modern Keras idiom."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Flatten(),
        L.Dense(24, activation="relu"),
        L.Dense(10),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return m, keras.optimizers.SGD(0.05, momentum=0.5), {}, loss


def activation_layers():
    """The activation layers: LeakyReLU after a linear conv, Activation tanh and sigmoid, ELU, and a
    Softmax layer ending the model."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(6, 3),
        L.LeakyReLU(),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(16),
        L.Activation("tanh"),
        L.Dense(12),
        L.ELU(alpha=0.5),
        L.Dense(12),
        L.Activation("sigmoid"),
        L.Dense(10),
        L.Softmax(),
    ])
    return m, keras.optimizers.Adam(learning_rate=0.003), {}


def layer_activations():
    """Activations inside the layers: a tanh conv, elu, leaky_relu and sigmoid dense layers."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(6, 3, activation="tanh"),
        L.MaxPooling2D(2),
        L.Flatten(),
        L.Dense(16, activation="elu"),
        L.Dense(12, activation="leaky_relu"),
        L.Dense(12, activation="sigmoid"),
        L.Dense(10, activation="softmax"),
    ])
    return m, keras.optimizers.Adam(learning_rate=0.003), {}


def class_weighted():
    """fit(class_weight=...): each example's loss and gradient weighed by its class; trained by clampnet
    with --class-weight 0:2,3:0.5,7:3 (fit arguments are not in a .keras file)."""
    m = keras.Sequential(small_conv())
    return m, keras.optimizers.Adam(learning_rate=0.003), {}


def strided_batchnorm():
    """A stride-2 conv without a bias (TF's same padding: the extra zero row and column below and right),
    BatchNormalization with gamma and beta restrictions, ReLU, a 3x3 max-pool at stride 2 with same
    padding, an even-kernel same conv, a same-padded average pool at stride 1 (it divides by the cells
    inside), global average pooling, Adam."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, strides=2, padding="same", use_bias=False),
        L.BatchNormalization(gamma_regularizer=R.L2(0.01), beta_constraint=C.MaxNorm(0.05, axis=0)),
        L.ReLU(),
        L.MaxPooling2D(3, strides=2, padding="same"),
        L.Conv2D(6, 2, padding="same", activation="relu"),
        L.AveragePooling2D(2, strides=1, padding="same"),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax"),
    ], name="strided_batchnorm")
    return m, keras.optimizers.Adam(learning_rate=0.003), {}


def batchnorm_sgd():
    """The CIFAR-style stack: l2(1e-4) kernels, BatchNormalization after a bias-free conv and on the
    pooled features (momentum 0.9, no beta), a 2x2 average pool, a strided relu conv, global max pooling,
    SGD with momentum on an ExponentialDecay schedule."""
    m = keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 3, padding="same", use_bias=False, kernel_regularizer=R.L2(1e-4)),
        L.BatchNormalization(),
        L.Activation("relu"),
        L.AveragePooling2D(2),
        L.Conv2D(8, 3, strides=2, padding="same", activation="relu", kernel_regularizer=R.L2(1e-4)),
        L.GlobalMaxPooling2D(),
        L.BatchNormalization(momentum=0.9, center=False),
        L.Dense(10, activation="softmax"),
    ], name="batchnorm_sgd")
    lr = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.8)
    return m, keras.optimizers.SGD(learning_rate=lr, momentum=0.9), {}


CLASS_WEIGHT = {"class_weighted": {0: 2.0, 3: 0.5, 7: 3.0}}

MODELS = [class_weighted, layer_activations, activation_layers, reference_l1l2, two_conv, clip_decay, dense_clipvalue, sgd_nesterov_exponential, sgd_piecewise,
          rmsprop_centered_cosine, rmsprop_inverse_time, adamw_cosine, dropout_injected, categorical_smoothing,
          sparse_from_logits, strided_batchnorm, batchnorm_sgd]


def pcg(v):
    """clampnet's dropout hash (shaders/dropout.wgsl), on uint32 arrays."""
    with np.errstate(over="ignore"):   # uint32 arithmetic wraps, as WGSL's and Rust's wrapping ops
        v = np.asarray(v, np.uint32)
        s = v * np.uint32(747796405) + np.uint32(2891336453)
        w = ((s >> ((s >> np.uint32(28)) + np.uint32(4))) ^ s) * np.uint32(277803737)
        return (w >> np.uint32(22)) ^ w


def clampnet_mask(run_seed, layer_seed, salt, step, n, rate):
    """clampnet's mask of a training step (`reference::dropout_mask`)."""
    s = layer_seed if layer_seed is not None else run_seed
    seed = np.uint32((s & 0xFFFFFFFF) ^ (s >> 32))
    threshold = np.uint32(min(int(rate * 4294967296.0), 4294967295))
    h = pcg(pcg(pcg(pcg(seed) ^ np.uint32(salt)) ^ np.uint32(step)) ^ np.arange(n, dtype=np.uint32))
    return h >= threshold


class InjectedDropout(keras.layers.Layer):
    """Dropout whose mask is set from outside before each step (`mask` variable, 1 = keep)."""

    def __init__(self, rate, **kw):
        super().__init__(**kw)
        self.rate = rate
        self.scale = np.float32(1.0 / (1.0 - rate))

    def build(self, shape):
        self.mask = self.add_weight(shape=(8,) + tuple(shape[1:]), initializer="ones", trainable=False,
                                    name="mask")

    def call(self, x, training=None):
        if not training:
            return x
        return keras.ops.where(self.mask > 0, x * self.scale, 0.0)


def train_injected(model, opt, x, y, run_seed=0):
    """3 steps of `model` with its Dropout layers replaced by clampnet's masks; the layers' weights and
    the losses after each step."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, L.Dropout):
            layers.append(InjectedDropout(layer.rate, name=layer.name + "_injected"))
        else:
            layers.append(layer)
    twin = keras.Sequential([keras.Input(model.input_shape[1:])] + layers)
    twin.compile(optimizer=opt, loss=model.loss)
    losses = []
    for step in range(3):
        for salt, (orig, layer) in enumerate(zip(model.layers, twin.layers)):
            if isinstance(layer, InjectedDropout):
                n = int(np.prod(layer.mask.shape))
                keep = clampnet_mask(run_seed, orig.seed, salt, step, n, orig.rate)
                layer.mask.assign(keep.reshape(layer.mask.shape).astype(np.float32))
        h = twin.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        losses.append(h.history["loss"][0])
    return losses


def names(model):
    out = []
    for layer in model.layers:
        for w in layer.weights:
            out.append(f"{layer.name}.{w.name}")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default="tests/fixtures/keras")
    ap.add_argument("--only", default="", help="comma-separated fixture names to (re)write; default all")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    os.makedirs(args.out, exist_ok=True)
    find = lambda stem: next(os.path.join(args.data, f) for f in sorted(os.listdir(args.data)) if f.startswith(stem))
    x = read_idx(find("train-images"))[:8].astype(np.float32)[..., None] / 255.0
    y = read_idx(find("train-labels"))[:8].astype(np.int64)
    manifest_path = os.path.join(args.out, "MANIFEST.json")
    manifest = {"keras": keras.__version__, "backend": keras.backend.backend(), "models": {}}
    if only and os.path.exists(manifest_path):
        manifest["models"] = json.load(open(manifest_path))["models"]
    for make in MODELS:
        if only and make.__name__ not in only:
            continue
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model, opt, hot, *loss = make()
        loss = loss[0] if loss else "sparse_categorical_crossentropy"
        categorical = isinstance(loss, keras.losses.CategoricalCrossentropy)
        labels = keras.utils.to_categorical(y, 10) if categorical else y
        name = make.__name__
        for layer, scale in hot.items():
            k = model.get_layer(layer).kernel
            k.assign(k.numpy() * scale)
        model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
        model.save(os.path.join(args.out, f"{name}.keras"))
        if any(isinstance(layer, L.Dropout) for layer in model.layers):
            losses = train_injected(model, opt, x, labels)
        else:
            losses = model.fit(x, labels, batch_size=8, epochs=3, shuffle=False, verbose=0,
                               class_weight=CLASS_WEIGHT.get(name)).history["loss"]
        tensors = {n: np.ascontiguousarray(w.numpy()) for n, w in zip(names(model), model.weights)}
        tensors["losses"] = np.array(losses, np.float32)
        save_file(tensors, os.path.join(args.out, f"{name}.expected.safetensors"))
        manifest["models"][name] = {"doc": make.__doc__, "losses": list(losses)}
        print(name, list(losses))
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
