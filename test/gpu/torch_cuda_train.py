#!/usr/bin/env python3
"""PyTorch peer of bench_cuda_train: training-step images/s on one CUDA GPU
(random 28x28x1 data resident on the device, SGD momentum 0.9, fp32, TF32 off
to match tether's default). The models are ../shared/peers/models.py's `cnn`
and `mlp`, repeated here because the lent GPU machine has no ../shared.
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


ap = argparse.ArgumentParser()
ap.add_argument("--model", default="cnn"); ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--warmup", type=int, default=20); ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--runs", type=int, default=3); ap.add_argument("--lr", type=float, default=0.05)
a = ap.parse_args()
if a.model not in ("cnn", "mlp"):
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
    m = (MnistCNN() if a.model == "cnn" else MLP()).to(dev)
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
