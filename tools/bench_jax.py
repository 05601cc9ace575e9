#!/usr/bin/env python3
"""JAX peer of `clampnet bench` (its default device: CUDA where jax[cuda] is installed, else CPU): the
reference model, one `jax.jit`-compiled training step (forward, backward, optax Adam with Keras'
epsilon, the buffers donated), the data on the device, the same batch sizes, warm-up and timed steps,
steady-state training images/s (compilation happens in the warm-up). One JSON object on stdout.

    python3 -m venv .venv-jax && .venv-jax/bin/pip install jax optax numpy     # (jax[cuda12] on a GPU)
    .venv-jax/bin/python tools/bench_jax.py --batch-sizes 32,128,512 --steps 200 --warmup 20
"""
import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_sweep_jax import forward  # the same model, written once (tools/)


def init(key, filters):
    k1, k2 = jax.random.split(key)
    g = lambda k, shape, fi, fo: jax.random.uniform(k, shape, jnp.float32, -np.sqrt(6 / (fi + fo)),
                                                    np.sqrt(6 / (fi + fo)))
    flat = filters * 13 * 13
    return {"ck": g(k1, (3, 3, 1, filters), 9, 9 * filters), "cb": jnp.zeros(filters),
            "dk": g(k2, (flat, 10), flat, 10), "db": jnp.zeros(10)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="32,128,512")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--filters", type=int, default=32)
    args = ap.parse_args()
    opt = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-7)
    results = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        key = jax.random.PRNGKey(0)
        params = init(key, args.filters)
        state = opt.init(params)
        n = bs * 64
        x = jax.device_put(jax.random.randint(key, (n, 28, 28, 1), 0, 256).astype(jnp.float32) / 255.0)
        y = jax.device_put(jax.random.randint(key, (n,), 0, 10))

        def loss(p, xb, yb):
            return optax.softmax_cross_entropy_with_integer_labels(forward(p, xb), yb).mean()

        def step(p, s, i):
            j = (i % 64) * bs
            xb = jax.lax.dynamic_slice_in_dim(x, j, bs)
            yb = jax.lax.dynamic_slice_in_dim(y, j, bs)
            g = jax.grad(loss)(p, xb, yb)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s

        step = jax.jit(step, donate_argnums=(0, 1))
        started = time.perf_counter()
        for i in range(args.warmup):
            params, state = step(params, state, i)
        jax.block_until_ready(params)
        warm = time.perf_counter() - started
        start = time.perf_counter()
        for i in range(args.steps):
            params, state = step(params, state, i)
        jax.block_until_ready(params)
        secs = time.perf_counter() - start
        results.append({"batch_size": bs, "images_per_second": bs * args.steps / secs,
                        "ms_per_step": 1e3 * secs / args.steps,
                        "seconds_per_60k_epoch": 60000 * secs / (bs * args.steps),
                        "warmup_seconds": warm})
    dev = jax.devices()[0]
    print(json.dumps({"framework": f"jax {jax.__version__} jit ({dev.platform}: {dev.device_kind})",
                      "mode": "jit", "steps": args.steps, "warmup": args.warmup, "results": results}))


if __name__ == "__main__":
    main()
