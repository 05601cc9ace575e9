#!/usr/bin/env python3
"""PyTorch peer of `clampnet bench` (CUDA where present, else CPU): the reference model, Adam with Keras'
epsilon, the same batch sizes, warm-up and timed steps, the data on the device, steady-state training
images/s. One JSON object on stdout. Modes:

  eager      the usual loop: forward, backward, optimizer step
  compile    the whole step (forward + backward + Adam) through torch.compile (--compile-mode:
             default, reduce-overhead, max-autotune); compilation happens in the warm-up
  cudagraph  (CUDA) the whole step captured once in a CUDA graph with Adam(fused=True, capturable=True)
             and replayed; each step copies its batch into the graph's static input first

    python3 -m venv .venv-torch && .venv-torch/bin/pip install torch numpy
    .venv-torch/bin/python tools/bench_torch.py --mode compile --batch-sizes 32,128,512 --steps 200
"""
import argparse
import json
import time

import torch
from torch import nn


def model_of(filters, dev):
    return nn.Sequential(
        nn.Conv2d(1, filters, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(filters * 13 * 13, 10),
    ).to(dev)


def stepper(mode, model, opt, loss_fn, x, y, bs, compile_mode):
    """A function step(i) that trains on batch i (of the 64 on the device)."""
    if mode == "eager":
        def step(i):
            j = (i % 64) * bs
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[j:j + bs]), y[j:j + bs])
            loss.backward()
            opt.step()
        return step
    if mode == "compile":
        def whole(xb, yb):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            return loss
        compiled = torch.compile(whole, mode=None if compile_mode == "default" else compile_mode)

        def step(i):
            j = (i % 64) * bs
            compiled(x[j:j + bs], y[j:j + bs])
        return step
    # cudagraph: warm up on a side stream, capture forward + backward + fused capturable Adam once
    static_x = x[:bs].clone()
    static_y = y[:bs].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss_fn(model(static_x), static_y).backward()
        opt.step()

    def step(i):
        j = (i % 64) * bs
        static_x.copy_(x[j:j + bs])
        static_y.copy_(y[j:j + bs])
        graph.replay()
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-sizes", default="32,128,512")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--filters", type=int, default=32)
    ap.add_argument("--mode", choices=["eager", "compile", "cudagraph"], default="eager")
    ap.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune"],
                    default="default")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.mode == "cudagraph" and dev.type != "cuda":
        raise SystemExit("--mode cudagraph needs a CUDA device")
    torch.manual_seed(0)
    results = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        model = model_of(args.filters, dev)
        graphed = args.mode == "cudagraph"
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7,
                               **({"fused": True, "capturable": True} if graphed else {}))
        loss_fn = nn.CrossEntropyLoss()
        n = bs * 64
        x = (torch.randint(0, 256, (n, 1, 28, 28), device=dev).float() / 255.0)
        y = torch.randint(0, 10, (n,), device=dev)
        started = time.perf_counter()
        step = stepper(args.mode, model, opt, loss_fn, x, y, bs, args.compile_mode)
        for i in range(args.warmup):
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        warm = time.perf_counter() - started
        start = time.perf_counter()
        for i in range(args.steps):
            step(i)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - start
        results.append({"batch_size": bs, "images_per_second": bs * args.steps / secs,
                        "ms_per_step": 1e3 * secs / args.steps,
                        "seconds_per_60k_epoch": 60000 * secs / (bs * args.steps),
                        "warmup_seconds": warm})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    mode = args.mode if args.mode != "compile" else f"compile ({args.compile_mode})"
    print(json.dumps({"framework": f"pytorch {torch.__version__} {mode} ({name})", "mode": mode,
                      "steps": args.steps, "warmup": args.warmup, "results": results}))


if __name__ == "__main__":
    main()
