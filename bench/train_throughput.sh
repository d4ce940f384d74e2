#!/usr/bin/env bash
# Training throughput: tether against PyTorch (../shared/peers/bench_train.py)
# on the same model, batch and thread count, measured in one run.
#   bench/train_throughput.sh [--model lenet|mlp] [--batch 64] [--threads 2] [--runs 3] [--device cpu|cuda]
# tether trains on synthetic 28x28 images (data pipeline included); PyTorch
# on one random batch, as the peer script does. Warm-up steps are excluded
# on both sides; each side reports the median of --runs runs.
# Ends with: RESULT tether_ips=... torch_ips=... ratio=... tether_rss_mb=... torch_rss_mb=...
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
MODEL=lenet BATCH=64 THREADS=2 RUNS=3 DEVICE=cpu STEPS=300
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2;; --batch) BATCH=$2; shift 2;; --threads) THREADS=$2; shift 2;;
    --runs) RUNS=$2; shift 2;; --device) DEVICE=$2; shift 2;; --steps) STEPS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
PEERS=${PEERS:-$TETHER_ROOT/../shared/peers}
[ -f "$PEERS/bench_train.py" ] || { echo "peer scripts not found at $PEERS (set PEERS=)" >&2; exit 2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-torch; fi
TETHER=${TETHER:-$BUILD_DIR/tether}
PY=${PYTHON:-/usr/bin/python3}
case "$MODEL" in lenet) TORCH_MODEL=cnn;; mlp) TORCH_MODEL=mlp;; *) TORCH_MODEL=$MODEL;; esac
TDEV=$DEVICE; [ "$DEVICE" = cuda ] && TDEV=cuda:0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
WARM=20

log "tether: $MODEL batch $BATCH threads $THREADS device $TDEV, $RUNS runs of $STEPS steps"
tether_ips=() tether_rss=0
for r in $(seq 1 "$RUNS"); do
  out=$(python3 "$TETHER_ROOT/bench/peak_rss.py" "$TETHER" train "$TETHER_ROOT/configs/fmnist-lenet.json" \
        --set model.name="$MODEL" --set data.name=synthetic --set data.synthetic_train=$((BATCH * (STEPS + WARM))) \
        --set data.synthetic_test=$BATCH --set data.batch_size="$BATCH" --set train.threads="$THREADS" \
        --set device="$TDEV" --set log.dir="$tmp/run$r" --set log.every_steps=$WARM --set log.progress=false \
        --set train.eval_every_epochs=0 2>&1)
  # images/s over the steps after the first logging window (warm-up).
  ips=$(python3 - "$tmp/run$r/node-0.jsonl" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"images_per_s"' in l and '"event"' not in l]
steady = recs[1:-1] if len(recs) > 2 else recs
imgs = sum(r["images_per_s"] for r in steady) / len(steady)
print(f"{imgs:.1f}")
PY
)
  rss=$(echo "$out" | sed -n 's/^peak_rss_mb=//p')
  echo "run $r: tether $ips img/s, peak RSS $rss MB"
  tether_ips+=("$ips"); tether_rss=$(python3 -c "print(max($tether_rss, $rss))")
done

log "PyTorch: $TORCH_MODEL batch $BATCH threads $THREADS device $DEVICE"
torch_args=(--model "$TORCH_MODEL" --batch "$BATCH" --threads "$THREADS" --warmup $WARM --steps "$STEPS" --runs "$RUNS")
if [ "$DEVICE" = cuda ]; then
  out=$(python3 "$TETHER_ROOT/bench/peak_rss.py" "$PY" "$TETHER_ROOT/test/gpu/torch_cuda_train.py" "${torch_args[@]}" 2>&1)
else
  out=$(python3 "$TETHER_ROOT/bench/peak_rss.py" "$PY" "$PEERS/bench_train.py" "${torch_args[@]}" 2>&1)
fi
echo "$out" | grep -E "^run|RESULT" | sed 's/^/  torch: /'
torch_ips=$(echo "$out" | sed -n 's/.*median=\([0-9.]*\).*/\1/p')
torch_rss=$(echo "$out" | sed -n 's/^peak_rss_mb=//p')
[ -n "$torch_ips" ] || { echo "PyTorch run failed:"; echo "$out"; exit 1; }

median=$(printf '%s\n' "${tether_ips[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
ratio=$(python3 -c "print(f'{$median / $torch_ips:.3f}')")
echo "tether median $median img/s, PyTorch median $torch_ips img/s"
echo "RESULT model=$MODEL batch=$BATCH threads=$THREADS device=$DEVICE tether_ips=$median torch_ips=$torch_ips ratio=$ratio tether_rss_mb=$tether_rss torch_rss_mb=$torch_rss"
