#!/usr/bin/env bash
# A PyTorch loop averaged by tether.Averager against the same loop under
# PyTorch DDP (gloo): LeNet on Fashion-MNIST, N local processes, the same
# shards, batches, optimizer and threads (examples/pytorch_fmnist.py), one
# seed after the other, tether then DDP, in the same run.
#   bench/pytorch_fmnist.sh [--nodes 4] [--epochs 1] [--staleness 2] [--period 1] [--seeds "1 2 3"]
# Prints per seed the test accuracies and images/s, then one RESULT line with
# the medians, the accuracy difference (tether − DDP, points) and the
# images/s ratio. Needs the build (build/python) and Debian's python3-torch.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
nodes=4 epochs=1 staleness=2 period=1 seeds="1" threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --epochs) epochs=$2; shift 2 ;;
    --staleness) staleness=$2; shift 2 ;;
    --period) period=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "usage: $0 [--nodes N] [--epochs E] [--staleness S] [--period H] [--seeds \"1 2 3\"] [--threads T]" >&2; exit 2 ;;
  esac
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export PYTHONPATH=$BUILD_DIR/python
for seed in $seeds; do
  for backend in tether ddp; do
    /usr/bin/python3 "$ROOT/examples/pytorch_fmnist.py" --backend "$backend" --nodes "$nodes" --epochs "$epochs" \
      --staleness "$staleness" --period "$period" --seed "$seed" --threads "$threads" \
      --log-dir "$out/log-$backend-$seed" --out "$out/$backend-$seed.json" | grep '^RESULT'
  done
done
/usr/bin/python3 - "$out" "$seeds" "$nodes" "$epochs" "$staleness" "$period" <<'PY'
import json, statistics, sys
out, seeds, nodes, epochs, s, h = sys.argv[1], sys.argv[2].split(), *sys.argv[3:]
acc, ips, same = {"tether": [], "ddp": []}, {"tether": [], "ddp": []}, True
for seed in seeds:
    for b in acc:
        with open(f"{out}/{b}-{seed}.json") as f:
            r = json.load(f)
        acc[b].append(r["results"][0]["test_acc"] * 100)
        ips[b].append(r["images_per_s"])
        same = same and r["same_params"]
    print(f"seed {seed}: tether {acc['tether'][-1]:.2f} %  {ips['tether'][-1]:.0f} img/s   "
          f"ddp {acc['ddp'][-1]:.2f} %  {ips['ddp'][-1]:.0f} img/s")
m = {b: statistics.median(v) for b, v in acc.items()}
r = {b: statistics.median(v) for b, v in ips.items()}
print(f"RESULT pytorch_fmnist nodes={nodes} epochs={epochs} staleness={s} period={h} seeds={len(seeds)} "
      f"tether_acc={m['tether']:.2f} ddp_acc={m['ddp']:.2f} diff_points={m['tether'] - m['ddp']:+.2f} "
      f"tether_img_s={r['tether']:.0f} ddp_img_s={r['ddp']:.0f} ratio={r['tether'] / r['ddp']:.2f} "
      f"tether_same_params={same}")
PY
