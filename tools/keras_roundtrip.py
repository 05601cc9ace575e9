#!/usr/bin/env python3
"""The Keras round trip, checked by Keras itself: clampnet trains each Keras-made model of
tests/fixtures/keras/, saves it as .keras and .weights.h5, and Keras loads both.

    .venv-tf/bin/python tools/keras_roundtrip.py [--clampnet target/release/clampnet] [--n 64]

For each model it reports (and writes to --out/roundtrip.json):
  - keras_vs_clampnet_predict: max |p_keras - p_clampnet| over the softmax outputs of the first --n test
    images, Keras' `load_model(...).predict` against `clampnet predict --json` on the same images (PNG)
  - weights_bit_identical: Keras' loaded weights equal clampnet's checkpoint bit for bit
  - weights_h5_bit_identical: the same through `model.load_weights(OUT.weights.h5)` into the model
    Keras built from the original fixture
  - optimizer_iterations: the Adam step count Keras restored from the file (clampnet's steps)
  - keras_fit_continues: Keras trains one more step from the loaded file (compiled, state restored)
Exit status 1 when a prediction differs by more than 1e-5 or a tensor is not bit-identical.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clampnet_keras  # noqa: E402,F401  (registers clampnet>ClipByValue)


def read_idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clampnet", default="target/release/clampnet")
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--fixtures", default="tests/fixtures/keras")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default="", help="comma-separated fixture names (default: all)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="clampnet-roundtrip-")
    os.makedirs(out, exist_ok=True)
    find = lambda stem: next(os.path.join(args.data, f) for f in sorted(os.listdir(args.data)) if f.startswith(stem))
    images = read_idx(find("t10k-images"))[:args.n]
    pngs = []
    for i, img in enumerate(images):
        p = os.path.join(out, f"test{i:03d}.png")
        Image.fromarray(img).save(p)
        pngs.append(p)
    x = images.astype(np.float32)[..., None] / 255.0
    report, ok = {"keras": keras.__version__, "backend": keras.backend.backend(), "n": args.n, "models": {}}, True
    for f in sorted(os.listdir(args.fixtures)):
        if not f.endswith(".keras"):
            continue
        name = f[:-len(".keras")]
        if args.only and name not in args.only.split(","):
            continue
        src = os.path.join(args.fixtures, f)
        trained = os.path.join(out, f"{name}.trained.keras")
        run = lambda *a: subprocess.run([args.clampnet, *a], check=True, capture_output=True, text=True).stdout
        run("train", "--config", src, "--limit-train", "512", "--limit-test", "64", "--epochs", "1", "--quiet",
            "--data", args.data, "--save", trained)
        run("convert", trained, os.path.join(out, f"{name}.trained.safetensors"))
        run("convert", trained, os.path.join(out, f"{name}.trained.weights.h5"))
        lines = run("predict", trained, *pngs, "--json", "--top-k", "10").splitlines()
        p_clampnet = np.zeros((args.n, 10))
        for i, line in enumerate(lines):
            for pr in json.loads(line)["predictions"]:
                p_clampnet[i, pr["class"]] = pr["probability"]
        model = keras.saving.load_model(trained)
        p_keras = model.predict(x, verbose=0)
        if getattr(model.layers[-1], "activation", None) is keras.activations.linear:
            # a from_logits model outputs logits; clampnet predict prints their softmax
            p_keras = keras.ops.convert_to_numpy(keras.ops.softmax(p_keras, axis=-1))
        ours = load_file(os.path.join(out, f"{name}.trained.safetensors"))
        names = [f"{l.name}.{w.name}" for l in model.layers for w in l.weights]
        same = all(np.array_equal(ours[n], w.numpy()) for n, w in zip(names, model.weights))
        original = keras.saving.load_model(src)
        original.load_weights(os.path.join(out, f"{name}.trained.weights.h5"))
        same_h5 = all(np.array_equal(ours[n], w.numpy()) for n, w in zip(names, original.weights))
        iterations = int(model.optimizer.iterations.numpy())
        categorical = isinstance(model.loss, keras.losses.CategoricalCrossentropy) or model.loss == "categorical_crossentropy"
        labels = np.eye(10, dtype=np.float32)[np.zeros(8, np.int64)] if categorical else np.zeros(8, np.int64)
        model.fit(x[:8], labels, batch_size=8, epochs=1, verbose=0)
        diff = float(np.abs(p_keras - p_clampnet).max())
        r = {"keras_vs_clampnet_predict": diff, "weights_bit_identical": same,
             "weights_h5_bit_identical": same_h5, "optimizer_iterations": iterations,
             "keras_fit_continues": int(model.optimizer.iterations.numpy()) == iterations + 1}
        report["models"][name] = r
        ok &= diff <= 1e-5 and same and same_h5
        print(name, r)
    with open(os.path.join(out, "roundtrip.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    print("report:", os.path.join(out, "roundtrip.json"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
