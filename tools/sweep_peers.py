"""What the stacked-model peers of `clampnet sweep run` (bench_sweep_torch.py, bench_sweep_jax.py) share:
the IDX reader, the data, and the grid of tools/sweep_bench.sh in clampnet's trial order (L1 in
{0, 1e-3} x max norm in {none, 2} x seeds, the first axis slowest, the seed fastest)."""
import gzip
import os

import numpy as np


def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder, n_train, n_test):
    """(train images, train labels, test images, test labels) as uint8 / label arrays."""
    def f(name):
        p = os.path.join(folder, name)
        return p if os.path.exists(p) else p + ".gz"
    return (idx(f("train-images-idx3-ubyte"))[:n_train], idx(f("train-labels-idx1-ubyte"))[:n_train],
            idx(f("t10k-images-idx3-ubyte"))[:n_test], idx(f("t10k-labels-idx1-ubyte"))[:n_test])


def grid(trials):
    """Per trial (seed, l1, max norm; 0: none), in clampnet's order, with trials // 4 seeds."""
    per = max(1, trials // 4)
    return [(t % per, [0.0, 1e-3][(t // per) // 2 % 2], [0.0, 2.0][(t // per) % 2]) for t in range(trials)]
