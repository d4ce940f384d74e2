#!/usr/bin/env bash
# Test accuracy after E epochs of lenet on Fashion-MNIST: tether against
# PyTorch (../shared/peers/train_fmnist.py) with the same settings (batch 64,
# lr 0.05, momentum 0.9, 2 threads), for several seeds, in one run.
#   bench/fmnist_accuracy.sh [--epochs 3] [--seeds "1 2 3"] [--threads 2]
# Ends with: RESULT epochs=... tether_acc=<median> torch_acc=<median> diff=... tether_s_per_epoch=... torch_s_per_epoch=...
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
EPOCHS=3 SEEDS="1 2 3" THREADS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --epochs) EPOCHS=$2; shift 2;; --seeds) SEEDS=$2; shift 2;; --threads) THREADS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
PEERS=${PEERS:-$TETHER_ROOT/../shared/peers}
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-torch; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ta=() pa=() tt=() pt=()
for s in $SEEDS; do
  start=$(date +%s.%N)
  "$BUILD_DIR/tether" train "$TETHER_ROOT/configs/fmnist-lenet.json" --set train.epochs="$EPOCHS" \
      --set train.seed="$s" --set train.threads="$THREADS" --set log.dir="$tmp/s$s" --set log.progress=false \
      --set train.eval_every_epochs="$EPOCHS" >/dev/null 2>&1
  end=$(date +%s.%N)
  acc=$(python3 -c "import json,sys; r=[json.loads(l) for l in open('$tmp/s$s/node-0.jsonl') if 'final' in l][-1]; print(f\"{r['test_acc']*100:.2f}\")")
  ta+=("$acc"); tt+=("$(python3 -c "print(f'{($end - $start) / $EPOCHS:.1f}')")")
  out=$(/usr/bin/python3 "$PEERS/train_fmnist.py" --epochs "$EPOCHS" --threads "$THREADS" --seed "$s" 2>&1 | tail -1)
  pacc=$(echo "$out" | sed -n 's/.*test_acc=\([0-9.]*\)%.*/\1/p')
  ptime=$(echo "$out" | sed -n 's/.*train_time=\([0-9.]*\)s.*/\1/p')
  pa+=("$pacc"); pt+=("$(python3 -c "print(f'{$ptime / $EPOCHS:.1f}')")")
  echo "seed $s: tether ${acc}% (${tt[-1]} s/epoch incl. eval)   PyTorch ${pacc}% (${pt[-1]} s/epoch train only)"
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mt=$(med "${ta[@]}"); mp=$(med "${pa[@]}")
echo "RESULT epochs=$EPOCHS seeds=\"$SEEDS\" tether_acc=$mt torch_acc=$mp diff=$(python3 -c "print(f'{$mt - $mp:+.2f}')") tether_s_per_epoch=$(med "${tt[@]}") torch_s_per_epoch=$(med "${pt[@]}")"
