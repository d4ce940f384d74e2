#!/usr/bin/env python3
"""Records the PyTorch reference of test/models/test_torch_reference.cpp.

lenet (= `cnn` of ../shared/peers/models.py) with tether's initial weights
(seed 1, written by the test binary's skipped case "torch reference: write
lenet's initial parameters"), 20 steps of torch.optim.SGD (lr 0.05, momentum
0.9) on the first 20 x 64 Fashion-MNIST training images in file order,
normalised as tether does: (x/255 - 0.2860) / 0.3530 in float32. Prints the
mean cross-entropy of each batch before its update as a C++ initialiser, to
paste into kTorchLosses.

Then the same for the declared model of the test "declared model
(batchnorm2d, avgpool2d, residual, global_avgpool) ..." (`Declared` below):
10 steps, then the loss of batch 10 in evaluation mode and the sums of the
batch-norms' running statistics (|running_mean|, running_var), for kTorchDeclLosses and the constants
after it.

usage: /usr/bin/python3 test/models/torch_reference.py build/test/models/test_models
needs: python3-torch, python3-numpy (Debian), dataset-fashion-mnist
"""
import gzip
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = np.float32(0.2860), np.float32(0.3530)
BATCH, STEPS, LR, MOMENTUM = 64, 20, 0.05, 0.9
DECL_STEPS = 10


class MnistCNN(nn.Module):
    """../shared/peers/models.py's cnn, repeated so the script stands alone."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def conv_bn(c_in, c_out, kernel, stride, pad, relu):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False), nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU()] if relu else layers


class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class Declared(nn.Module):
    """declared_layers() of test_torch_reference.cpp."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            *conv_bn(1, 8, 3, 1, 1, True), nn.AvgPool2d(3, 2, 1),   # count_include_pad=True
            Residual(conv_bn(8, 16, 3, 2, 1, True) + conv_bn(16, 16, 3, 1, 1, False), conv_bn(8, 16, 1, 2, 0, False)),
            nn.ReLU(),
            Residual([nn.Conv2d(16, 16, 3, 1, 1, bias=False), nn.ReLU(), *conv_bn(16, 16, 3, 1, 1, False)]),
            nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


def load_tether_init(model, params):
    """tether's arena: trainable parameters in declaration order (parameters()
    order, PyTorch's layouts), then the averaged buffers (running_mean,
    running_var of each batch-norm in order)."""
    tensors = list(model.parameters())
    tensors += [b for name, b in model.named_buffers() if not name.endswith("num_batches_tracked")]
    assert sum(t.numel() for t in tensors) == params.size, (params.size, "parameters")
    offset = 0
    with torch.no_grad():
        for t in tensors:
            t.copy_(torch.from_numpy(params[offset:offset + t.numel()].copy()).view(t.shape))
            offset += t.numel()


def idx(path, header):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def fmnist_steps():
    """The first STEPS batches of BATCH Fashion-MNIST training images in file
    order, normalised as tether does: (images, labels), float32 and int64."""
    images = idx(f"{DATA}/train-images-idx3-ubyte.gz", 16)[:BATCH * STEPS * 784].reshape(-1, 1, 28, 28)
    labels = idx(f"{DATA}/train-labels-idx1-ubyte.gz", 8)[:BATCH * STEPS].astype(np.int64)
    return (images.astype(np.float32) / np.float32(255) - MEAN) / STD, labels


def sgd_step(model, opt, loss_fn, x_all, labels, step):
    """One step on batch `step`: returns the batch's loss before the update."""
    x = torch.from_numpy(x_all[step * BATCH:(step + 1) * BATCH])
    y = torch.from_numpy(labels[step * BATCH:(step + 1) * BATCH])
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def tether_init(test_binary, name="lenet"):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([os.path.abspath(test_binary), "-tc=torch reference*", "--no-skip"], cwd=d, check=True,
                       stdout=subprocess.DEVNULL)
        return np.fromfile(os.path.join(d, f"{name}-init.f32"), dtype="<f4")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    torch.set_num_threads(2)
    params = tether_init(sys.argv[1])
    model = MnistCNN()
    # tether's arena holds the trainable parameters in declaration order with
    # PyTorch's layouts (conv OIHW, linear (out, in)): state_dict's order.
    state = model.state_dict()
    assert sum(v.numel() for v in state.values()) == params.size, (params.size, "parameters")
    offset = 0
    for name, v in state.items():
        state[name] = torch.from_numpy(params[offset:offset + v.numel()].copy()).view(v.shape)
        offset += v.numel()
    model.load_state_dict(state)

    x_all, labels = fmnist_steps()
    assert STEPS >= DECL_STEPS + 1
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for step in range(STEPS):
        losses.append(sgd_step(model, opt, loss_fn, x_all, labels, step))
    print(f"// torch {torch.__version__}, {STEPS} steps, batch {BATCH}, lr {LR}, momentum {MOMENTUM}")
    for i in range(0, STEPS, 4):
        print("    " + " ".join(f"{v:.9g}," for v in losses[i:i + 4]))

    # The declared model: 10 steps, then batch 10 in evaluation mode.
    model = Declared()
    load_tether_init(model, tether_init(sys.argv[1], "declared"))
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    losses = []
    for step in range(DECL_STEPS):
        losses.append(sgd_step(model, opt, loss_fn, x_all, labels, step))
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(x_all[DECL_STEPS * BATCH:(DECL_STEPS + 1) * BATCH])
        y = torch.from_numpy(labels[DECL_STEPS * BATCH:(DECL_STEPS + 1) * BATCH])
        eval_loss = loss_fn(model(x), y).item()
    mean_sum = sum(b.double().abs().sum().item() for n, b in model.named_buffers() if n.endswith("running_mean"))
    var_sum = sum(b.double().sum().item() for n, b in model.named_buffers() if n.endswith("running_var"))
    print(f"// declared model: {DECL_STEPS} steps")
    for i in range(0, DECL_STEPS, 5):
        print("    " + " ".join(f"{v:.9g}," for v in losses[i:i + 5]))
    print(f"kTorchDeclEvalLoss = {eval_loss:.9g}")
    print(f"kTorchDeclMeanSum = {mean_sum:.9g}, kTorchDeclVarSum = {var_sum:.9g}")


if __name__ == "__main__":
    main()
