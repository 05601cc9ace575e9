#!/usr/bin/env python3
"""JAX peer of `clampnet sweep run`: K trials of the reference model trained at once with `jax.vmap`
(one jit-compiled, vmapped step over stacked parameters, optax Adam, the data on the device), the way a
JAX user trains many small models on one device. Each trial has its own seed (initial weights and epoch
order), its own L1 strength on the conv kernel and its own max-norm value (0: none), as the grid of
tools/sweep_bench.sh: L1 in {0, 1e-3} x max norm in {none, 2} x seeds.

    python3 -m venv .venv-jax && .venv-jax/bin/pip install jax optax numpy     # (jax[cuda12] on a GPU)
    .venv-jax/bin/python tools/bench_sweep_jax.py --trials 8 --limit-train 2000 --limit-test 1000 --epochs 1

Prints one JSON object: total wall time (data on the device, compilation, training, evaluation), the
compile time, the steady-state training time and each trial's test accuracy.
"""
import argparse
import json
import os
import time

T0 = time.perf_counter()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from sweep_peers import grid, load  # noqa: E402  (tools/)


def glorot(key, shape, fan_in, fan_out):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, jnp.float32, -limit, limit)


def init(seed):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {
        "ck": glorot(k1, (3, 3, 1, 32), 9, 288), "cb": jnp.zeros(32),
        "dk": glorot(k2, (5408, 10), 5408, 10), "db": jnp.zeros(10),
    }


def forward(p, x):
    y = jax.lax.conv_general_dilated(x, p["ck"], (1, 1), "VALID",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["cb"]
    y = jax.nn.relu(y)
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return y.reshape(y.shape[0], -1) @ p["dk"] + p["db"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--limit-train", type=int, default=2000)
    ap.add_argument("--limit-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--data", default=os.environ.get("CLAMPNET_DATA", "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    K, B = a.trials, a.batch_size
    xtr, ytr, xte, yte = load(a.data, a.limit_train, a.limit_test)
    X = jax.device_put(jnp.asarray(xtr, jnp.float32)[..., None] / 255.0)
    Y = jax.device_put(jnp.asarray(ytr, jnp.int32))
    Xt = jax.device_put(jnp.asarray(xte, jnp.float32)[..., None] / 255.0)
    Yt = jax.device_put(jnp.asarray(yte, jnp.int32))
    trials = grid(K)
    seeds = np.array([t[0] for t in trials])
    l1 = jnp.array([t[1] for t in trials], jnp.float32)
    maxnorm = jnp.array([t[2] for t in trials], jnp.float32)
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[init(int(s)) for s in seeds])
    opt = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-7)
    opt_state = jax.vmap(opt.init)(params)

    def loss(p, x, y, l1):
        logits = forward(p, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return ce + l1 * jnp.abs(p["ck"]).sum()

    def step(p, s, idx, l1, mn):
        g = jax.grad(loss)(p, X[idx], Y[idx], l1)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        norms = jnp.sqrt((p["ck"] ** 2).sum(axis=(0, 1, 2), keepdims=True))
        clipped = p["ck"] * (jnp.clip(norms, 0.0, mn) / (1e-7 + norms))
        p = dict(p, ck=jnp.where(mn > 0, clipped, p["ck"]))
        return p, s

    vstep = jax.vmap(step)

    @jax.jit
    def epoch(p, s, order, l1, mn):
        # order: (steps, K, B) batch indices, one permutation per trial
        def body(carry, idx):
            p, s = carry
            return vstep(p, s, idx, l1, mn), None
        (p, s), _ = jax.lax.scan(body, (p, s), order)
        return p, s

    @jax.jit
    def accuracy(p):
        return jax.vmap(lambda q: (forward(q, Xt).argmax(-1) == Yt).mean())(p)

    n = X.shape[0]
    steps = n // B  # whole batches (the scan needs one shape)
    orders = []
    for e in range(a.epochs):
        perm = np.stack([np.random.default_rng((int(s), e)).permutation(n)[:steps * B] for s in seeds])
        orders.append(jnp.asarray(perm.reshape(K, steps, B).transpose(1, 0, 2)))
    t_compile = time.perf_counter()
    epoch.lower(params, opt_state, orders[0], l1, maxnorm).compile()
    compile_s = time.perf_counter() - t_compile
    t_train = time.perf_counter()
    for e in range(a.epochs):
        params, opt_state = epoch(params, opt_state, orders[e], l1, maxnorm)
    jax.block_until_ready(params)
    train_s = time.perf_counter() - t_train
    acc = accuracy(params)
    jax.block_until_ready(acc)
    total = time.perf_counter() - T0
    dev = jax.devices()[0]
    print(json.dumps({
        "framework": f"jax {jax.__version__} vmap + jit(scan) ({dev.platform}: {dev.device_kind})",
        "trials": K, "batch_size": B, "epochs": a.epochs, "train_examples": steps * B,
        "total_seconds": total, "compile_seconds": compile_s, "train_seconds": train_s,
        "images_per_second": K * steps * B * a.epochs / train_s,
        "test_accuracy": [round(float(v), 4) for v in acc],
    }))


if __name__ == "__main__":
    main()
