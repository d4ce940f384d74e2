#!/usr/bin/env python3
"""PyTorch peer of bench_cuda_train: training-step images/s on one CUDA GPU
(random 28x28x1 data resident on the device, SGD momentum 0.9, fp32, TF32 off
to match tether's default). The models are ../shared/peers/models.py's `cnn`
and `mlp`, and tether's `resnet` (ResNet-20), repeated here because the lent GPU machine has no ../shared.
usage: python3 torch_cuda_train.py --model cnn --batch 64 --warmup 20 --steps 200 --runs 3
Ends with one RESULT line; exits 3 when torch or a CUDA device is missing."""
import argparse, statistics, sys, time

try:
    import torch, torch.nn as nn, torch.nn.functional as F
except ImportError as e:
    print(f"RESULT skipped: no torch ({e})"); sys.exit(3)


class MnistCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class MLP(nn.Module):
    def __init__(self, hidden=512, num_classes=10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential()
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.sc(x))


def resnet(depth=3, width=16, classes=10):
    """tether's `resnet` (models/zoo.h; depth 3, width 16 = ResNet-20 on one channel)."""
    layers = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for s in range(3):
        for b in range(depth):
            layers.append(Block(cin, width << s, 2 if s > 0 and b == 0 else 1)); cin = width << s
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


ap = argparse.ArgumentParser()
ap.add_argument("--model", default="cnn"); ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--warmup", type=int, default=20); ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--runs", type=int, default=3); ap.add_argument("--lr", type=float, default=0.05)
a = ap.parse_args()
if a.model == "lenet":
    a.model = "cnn"
if a.model not in ("cnn", "mlp", "resnet"):
    print(f"RESULT skipped: model {a.model} has no PyTorch twin here"); sys.exit(3)
if not torch.cuda.is_available():
    print("RESULT skipped: torch.cuda.is_available() is False"); sys.exit(3)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
dev = torch.device("cuda:0")
res = []
for r in range(a.runs):
    m = {"cnn": MnistCNN, "mlp": MLP, "resnet": resnet}[a.model]().to(dev)
    opt = torch.optim.SGD(m.parameters(), lr=a.lr, momentum=0.9)
    x = torch.randn(a.batch, 1, 28, 28, device=dev); y = torch.randint(0, 10, (a.batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True); loss = F.cross_entropy(m(x), y); loss.backward(); opt.step()

    for _ in range(a.warmup): step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps): step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    res.append(a.batch * a.steps / dt)
    print(f"run {r}: {res[-1]:.1f} img/s ({dt / a.steps * 1e3:.3f} ms/step)", flush=True)
print(f"RESULT model={a.model} batch={a.batch} device={torch.cuda.get_device_name(0)} "
      f"torch={torch.__version__} median={statistics.median(res):.1f} img/s")
