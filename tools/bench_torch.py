#!/usr/bin/env python3
"""PyTorch peer of `clampnet bench` (eager mode; CUDA where present, else CPU): the reference model with
Keras' Adam (eps on the uncorrected sqrt(v) differs from torch.optim.Adam only in where eps sits, which does
not change the cost), the same batch sizes, steady-state training images/s after a warm-up.

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
    .venv-torch/bin/python tools/bench_torch.py --batch-sizes 32,128,512 --steps 200 --warmup 20
"""
import argparse
import json
import time

import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="32,128,512")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--filters", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    results = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        model = nn.Sequential(
            nn.Conv2d(1, args.filters, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(args.filters * 13 * 13, 10),
        ).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
        loss_fn = nn.CrossEntropyLoss()
        n = bs * 64
        x = (torch.randint(0, 256, (n, 1, 28, 28), device=dev).float() / 255.0)
        y = torch.randint(0, 10, (n,), device=dev)

        def step(i):
            j = (i % 64) * bs
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[j:j + bs]), y[j:j + bs])
            loss.backward()
            opt.step()
            return loss

        for i in range(args.warmup):
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(args.steps):
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        results.append({"batch_size": bs, "images_per_second": bs * args.steps / secs,
                        "ms_per_step": 1e3 * secs / args.steps, "seconds_per_60k_epoch": 60000 * secs / (bs * args.steps)})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(json.dumps({"framework": f"pytorch {torch.__version__} eager ({name})", "steps": args.steps,
                      "warmup": args.warmup, "results": results}))


if __name__ == "__main__":
    main()
