#!/usr/bin/python3
"""PyTorch on the GPU, the peer of `bench/train_throughput.sh --device cuda`:
the same loop as ../shared/peers/bench_train.py (random data, SGD momentum),
with the model and batch on cuda:0 and a synchronize around the timing.
TF32 is off (tether's default is exact fp32).
usage: torch_cuda_train.py --model cnn|mlp|resnet --batch 256 --warmup 20 --steps 200 --runs 3"""
import argparse, os, statistics, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers"))
import torch, torch.nn as nn, torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="cnn"); ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--threads", type=int, default=2); ap.add_argument("--warmup", type=int, default=20)
ap.add_argument("--steps", type=int, default=200); ap.add_argument("--runs", type=int, default=3)
a = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False); self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False); self.b2 = nn.BatchNorm2d(cout)
        self.sc = nn.Sequential()
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.sc(x))


def resnet(depth=3, width=16, classes=10):
    """tether's `resnet` (models/zoo.h): stem, 3 stages of `depth` blocks, widths w, 2w, 4w."""
    layers = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for s in range(3):
        for b in range(depth):
            cout = width << s
            layers.append(Block(cin, cout, 2 if s > 0 and b == 0 else 1)); cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def build(name):
    if name == "resnet":
        return resnet(int(os.environ.get("RESNET_DEPTH", 3)), int(os.environ.get("RESNET_WIDTH", 16)))
    import models
    return models.build(name)


dev = torch.device("cuda")
res = []
for r in range(a.runs):
    torch.manual_seed(0)
    m = build(a.model).to(dev); opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    x = torch.randn(a.batch, 1, 28, 28, device=dev); y = torch.randint(0, 10, (a.batch,), device=dev)
    def step():
        opt.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); opt.step()
    for _ in range(a.warmup): step()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(a.steps): step()
    torch.cuda.synchronize(); dt = time.perf_counter() - t
    res.append(a.batch * a.steps / dt)
    print(f"run {r}: {res[-1]:.1f} img/s ({dt/a.steps*1e3:.2f} ms/step)", flush=True)
print(f"RESULT model={a.model} device=cuda batch={a.batch} median={statistics.median(res):.1f} img/s "
      f"runs={[round(v,1) for v in res]}")
