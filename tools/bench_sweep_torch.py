#!/usr/bin/env python3
"""PyTorch peer of `clampnet sweep run`: K trials of the reference model trained at once with
`torch.func` (stack_module_state + vmap(grad(functional_call)) over stacked parameters, one Adam over
the stacks, the data on the device), the way a PyTorch user trains many small models on one device.
Each trial has its own seed (initial weights and epoch order), its own L1 strength on the conv kernel
and its own max-norm value (0: none), as the grid of tools/sweep_bench.sh: L1 in {0, 1e-3} x max norm
in {none, 2} x seeds.

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
    .venv-torch/bin/python tools/bench_sweep_torch.py --trials 8 --limit-train 2000 --limit-test 1000 --epochs 1
    (--compile: torch.compile the vmapped step)

Prints one JSON object: total wall time (data on the device, training, evaluation), the time of the
first step (compilation where --compile), the steady-state training time and each trial's test accuracy.
"""
import argparse
import copy
import json
import os
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, stack_module_state, vmap  # noqa: E402
from sweep_peers import grid, load  # noqa: E402  (tools/)


def model(seed):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 13 * 13, 10))
    for layer in (m[0], m[4]):  # Keras' glorot_uniform kernels and zero biases
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--limit-train", type=int, default=2000)
    ap.add_argument("--limit-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=os.environ.get("CLAMPNET_DATA", "/usr/share/datasets/fashion-mnist"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    K, B = a.trials, a.batch_size
    xtr, ytr, xte, yte = load(a.data, a.limit_train, a.limit_test)
    X = torch.tensor(xtr, dtype=torch.float32, device=dev).unsqueeze(1) / 255.0
    Y = torch.tensor(ytr, dtype=torch.int64, device=dev)
    Xt = torch.tensor(xte, dtype=torch.float32, device=dev).unsqueeze(1) / 255.0
    Yt = torch.tensor(yte, dtype=torch.int64, device=dev)
    trials = grid(K)
    seeds = [t[0] for t in trials]
    l1 = torch.tensor([t[1] for t in trials], device=dev)
    maxnorm = torch.tensor([t[2] for t in trials], device=dev)
    models = [model(s).to(dev) for s in seeds]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.Adam(list(params.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)

    def loss(p, b, x, y, l1):
        logits = functional_call(base, (p, b), (x,))
        return nn.functional.cross_entropy(logits, y) + l1 * p["0.weight"].abs().sum()

    grads = vmap(grad(loss))
    if a.compile:
        grads = torch.compile(grads)

    def step(idx):
        g = grads(params, buffers, X[idx], Y[idx], l1)
        for name, p in params.items():
            p.grad = g[name]
        opt.step()
        with torch.no_grad():
            w = params["0.weight"]  # (K, 32, 1, 3, 3): Keras' axis [0, 1, 2] is (in, kh, kw) here
            norms = w.pow(2).sum(dim=(2, 3, 4), keepdim=True).sqrt()
            mn = maxnorm.view(K, 1, 1, 1, 1)
            clipped = w * (torch.minimum(norms, mn) / (1e-7 + norms))
            w.copy_(torch.where(mn > 0, clipped, w))

    n = X.shape[0]
    steps = n // B
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    first_s, t_train = None, None
    for e in range(a.epochs):
        perm = np.stack([np.random.default_rng((s, e)).permutation(n)[:steps * B] for s in seeds])
        order = torch.tensor(perm.reshape(K, steps, B), device=dev)
        for i in range(steps):
            if first_s is None:
                t = time.perf_counter()
                step(order[:, i])
                sync()
                first_s = time.perf_counter() - t
                t_train = time.perf_counter()
                continue
            step(order[:, i])
    sync()
    train_s = time.perf_counter() - t_train
    with torch.no_grad():
        logits = vmap(lambda p, b: functional_call(base, (p, b), (Xt,)))(params, buffers)
        acc = (logits.argmax(-1) == Yt).float().mean(-1)
    sync()
    total = time.perf_counter() - T0
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(json.dumps({
        "framework": f"pytorch {torch.__version__} torch.func vmap{' + compile' if a.compile else ''} ({name})",
        "trials": K, "batch_size": B, "epochs": a.epochs, "train_examples": steps * B,
        "total_seconds": total, "first_step_seconds": first_s, "train_seconds": train_s,
        "images_per_second": K * (steps * B * a.epochs - B) / train_s,
        "test_accuracy": [round(float(v), 4) for v in acc],
    }))


if __name__ == "__main__":
    main()
