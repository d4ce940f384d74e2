#!/usr/bin/env python3
"""lenet's 20 SGD steps against PyTorch, step by step (test/models/test_torch_reference.cpp).

The test binary's skipped case "torch reference: write lenet's steps" writes
tether's parameters and momentum buffer before each step and each step's loss.
From tether's state before step k, PyTorch (torch_reference.py's MnistCNN,
torch.optim.SGD lr 0.05, momentum 0.9) computes the loss of batch k, then the
step. Compared (relative: norm of the difference over the norm), for each
layer, the momentum buffer after the step and the step's update of the
parameters:
- the loss to 1e-5, the classifier's layers to 1e-4 (measured: 2e-7 and
  2.3e-6 at most; a momentum of 0.8991 instead of 0.9 moves the buffers by
  8e-4);
- the convolutions: to 1e-2. Their gradients pass the max-pools, and
  Fashion-MNIST's flat backgrounds give many windows whose largest values tie
  (51,910 positive ties in the first pool at step 4): where a rounding-sized
  difference in the convolution breaks a tie differently, the gradient flows
  to another pixel. Measured: 1e-7 at most steps, 2.2e-3 at one step of 20.
Step by step, so the check does not depend on where such a choice first
differs (two whole runs then drift apart; see the C++ test).

usage: /usr/bin/python3 test/models/torch_steps.py build/test/models/test_models
Prints doctest's summary line, as one test case (scripts/test_summary.py counts it).
needs: python3-torch, python3-numpy (Debian), dataset-fashion-mnist
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import DATA, LR, MOMENTUM, STEPS, MnistCNN, fmnist_steps, sgd_step  # noqa: E402

TOLERANCE_LOSS = 1e-5
TOLERANCE = 1e-4       # every layer after the max-pools (measured: 2.3e-6 at most)
TOLERANCE_CONV = 1e-2  # the convolutions (the max-pools' ties, above)


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def load(model, flat):
    offset = 0
    with torch.no_grad():
        for p in model.parameters():   # tether's arena: parameters() order, PyTorch's layouts
            p.copy_(torch.from_numpy(flat[offset:offset + p.numel()].copy()).view(p.shape))
            offset += p.numel()
    assert offset == flat.size, (offset, flat.size)




def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if not os.path.exists(f"{DATA}/train-images-idx3-ubyte.gz"):
        print("Debian's dataset-fashion-mnist is not installed: test not run")
        print("[doctest] test cases: 1 | 1 passed | 0 failed | 0 skipped")
        return 0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([os.path.abspath(sys.argv[1]), "-tc=torch reference: write lenet's steps", "--no-skip"],
                       cwd=d, check=True, stdout=subprocess.DEVNULL)
        losses = np.fromfile(f"{d}/lenet-losses.f64", dtype="<f8")
        params = np.fromfile(f"{d}/lenet-params.f32", dtype="<f4")
        momentum = np.fromfile(f"{d}/lenet-momentum.f32", dtype="<f4")
    assert losses.size == STEPS, f"{losses.size} losses written, expected {STEPS}"
    n = params.size // (STEPS + 1)
    params, momentum = params.reshape(STEPS + 1, n), momentum.reshape(STEPS + 1, n)

    x_all, labels = fmnist_steps()
    model = MnistCNN()
    loss_fn = nn.CrossEntropyLoss()
    failed = 0
    worst = {}
    for k in range(STEPS):
        load(model, params[k])
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        if k > 0:   # step 0 starts without a buffer: torch then takes the gradient, as tether's zeros give
            offset = 0
            for p in model.parameters():
                opt.state[p]["momentum_buffer"] = torch.from_numpy(momentum[k][offset:offset + p.numel()].copy()).view(p.shape)
                offset += p.numel()
        loss = sgd_step(model, opt, loss_fn, x_all, labels, k)
        got = [("loss", abs(losses[k] - loss) / abs(loss), TOLERANCE_LOSS)]
        offset = 0
        for name, p in model.named_parameters():
            span = slice(offset, offset + p.numel())
            offset += p.numel()
            tol = TOLERANCE if name.startswith("classifier.") else TOLERANCE_CONV
            theirs_update = p.detach().reshape(-1).numpy().astype(np.float64) - params[k][span]
            got.append((f"{name} momentum", rel(momentum[k + 1][span], opt.state[p]["momentum_buffer"].reshape(-1)), tol))
            got.append((f"{name} update", rel(params[k + 1][span].astype(np.float64) - params[k][span], theirs_update), tol))
        for what, v, tol in got:
            group = "loss" if what == "loss" else ("classifier" if what.startswith("classifier.") else "convolutions")
            worst[group] = max(worst.get(group, 0.0), v)
            if not v <= tol:
                failed += 1
                print(f"step {k}: {what} differs from PyTorch's by {v:.3e} relative (tolerance {tol})")
    print(f"lenet, {STEPS} steps, each from tether's state against PyTorch's step: largest relative difference "
          + ", ".join(f"{g} {v:.2e}" for g, v in worst.items()))
    print(f"[doctest] test cases: 1 | {0 if failed else 1} passed | {1 if failed else 0} failed | 0 skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
