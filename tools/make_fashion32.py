#!/usr/bin/env python3
"""Fashion-MNIST as a 32x32x3 dataset: each 28x28 image padded with 2 black pixels on every side and
repeated over 3 channels, written as gzip rank-4 IDX files (count x 32 x 32 x 3) with the labels copied,
so that the CIFAR-shaped shipped configs (configs/maxnorm_dropout_sgd.toml, configs/batchnorm_gap.toml)
train on real data. numpy only.

    python3 tools/make_fashion32.py [--data /usr/share/datasets/fashion-mnist] [--out /tmp/fashion32]
"""
import argparse
import gzip
import os
import shutil

import numpy as np


def read_idx(path):
    data = open(path, "rb").read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def pad32(x):
    """(n, 28, 28) -> (n, 32, 32, 3)."""
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(x[..., None], 3, axis=3)


def write_idx(path, x):
    head = bytes([0, 0, 0x08, x.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + np.ascontiguousarray(x, np.uint8).tobytes())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--out", default="/tmp/fashion32")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    find = lambda stem: next(os.path.join(args.data, f) for f in sorted(os.listdir(args.data)) if f.startswith(stem))  # noqa: E731
    for split in ("train", "t10k"):
        write_idx(os.path.join(args.out, f"{split}-images-idx4-ubyte.gz"), pad32(read_idx(find(f"{split}-images"))))
        labels = find(f"{split}-labels")
        shutil.copy(labels, os.path.join(args.out, f"{split}-labels-idx1-ubyte" + (".gz" if labels.endswith(".gz") else "")))
    print(args.out)


if __name__ == "__main__":
    main()
