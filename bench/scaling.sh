#!/usr/bin/env bash
# Data-parallel scaling on one machine: lenet on Fashion-MNIST, 1 node against
# 2 nodes (1 thread each, overlap s = 2, ring, 127.0.0.1), and PyTorch DDP
# (gloo, ../shared/peers/bench_ddp.py --world 2 --threads 1) in the same run.
#   bench/scaling.sh [--runs 3] [--seeds "1 2 3"] [--staleness 2] [--period 4] [--scale-lr]
#                    [--warmup-epochs 0.2] [--ddp-steps 150] [--tp-steps 250]
# Throughput: images/s summed over nodes at steady state, from the metrics
#   files (interval records; the first interval, warm-up, and the last, partial,
#   left out), median over max(--runs, number of seeds) runs. The first runs
#   train one full epoch on each side, one per seed of --seeds; further runs
#   stop after --tp-steps steps.
# Accuracy: test accuracy after 1 epoch, median over the seeds on each side
#   (one epoch of lenet swings by about a point from seed to seed: one seed
#   cannot resolve a 0.5-point difference). Both sides use batch 64 and lr
#   0.05 per node; the 2 nodes average their deltas every --period local steps
#   (H). --scale-lr applies the linear scaling rule instead (optimizer.scale_lr:
#   lr x 2 for the global batch of 128, with --warmup-epochs of linear warm-up);
#   measured here, it loses accuracy after one epoch (see README).
# Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/; SKIP_BUILD=1 skips the build).
# Ends with one line:
#   RESULT speedup=... acc_1=... acc_2=... tether_2_ips=... ddp_2_ips=... ratio_vs_ddp=...
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
RUNS=3 STALENESS=2 PERIOD=4 WARMUP_EPOCHS=0.2 SCALE_LR=false DDP_STEPS=150 TP_STEPS=250 SEEDS="1 2 3"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;; --staleness) STALENESS=$2; shift 2;; --period) PERIOD=$2; shift 2;;
    --warmup-epochs) WARMUP_EPOCHS=$2; shift 2;; --no-scale-lr) SCALE_LR=false; shift;; --scale-lr) SCALE_LR=true; shift;;
    --ddp-steps) DDP_STEPS=$2; shift 2;; --tp-steps) TP_STEPS=$2; shift 2;; --seeds) SEEDS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
PEERS=${PEERS:-$TETHER_ROOT/../shared/peers}
DATA=/usr/share/datasets/fashion-mnist
[ -f "$PEERS/bench_ddp.py" ] || { echo "peer scripts not found at $PEERS (set PEERS=)" >&2; exit 2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-torch dataset-fashion-mnist; fi
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "Fashion-MNIST not found under $DATA" >&2; exit 2; }
TETHER=${TETHER:-$BUILD_DIR/tether}
[ -x "$TETHER" ] || { echo "$TETHER not built" >&2; exit 2; }
PY=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "machine: $(nproc) cores, $(uname -m); commit $(git -C "$TETHER_ROOT" rev-parse --short HEAD 2>/dev/null || echo ?); $(date -u +%FT%TZ)"

# free_ports N: N distinct free TCP ports on 127.0.0.1 (bound together to port 0).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()
PY
}

# cluster_config OUT PORT0 PORT1: the 2-node config.
cluster_config() {
  python3 - "$@" "$TETHER_ROOT/configs/fmnist-lenet.json" "$STALENESS" "$SCALE_LR" "$WARMUP_EPOCHS" "$PERIOD" <<'PY'
import json, sys
out, p0, p1, base, s, scale, warm, period = sys.argv[1:9]
c = json.load(open(base))
c["cluster"] = {"peers": [{"id": 0, "host": "127.0.0.1", "port": int(p0)},
                          {"id": 1, "host": "127.0.0.1", "port": int(p1)}]}
c["algorithm"] = {"name": "overlap", "staleness": int(s), "period": int(period), "mixer": "ring"}
c["optimizer"]["scale_lr"] = scale == "true"
c["optimizer"]["warmup_epochs"] = float(warm) if scale == "true" else 0.0
json.dump(c, open(out, "w"), indent=1)
PY
}

# steady_ips LOGDIR NODES: images/s summed over nodes (median of each node's
# interval records, the first and the last left out).
steady_ips() {
  python3 - "$@" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
tot = 0.0
for i in range(n):
    recs = [json.loads(l) for l in open(f"{d}/node-{i}.jsonl")]
    ips = [r["images_per_s"] for r in recs if "event" not in r and "images_per_s" in r]
    steady = ips[1:-1] if len(ips) > 2 else ips
    tot += statistics.median(steady)
print(f"{tot:.1f}")
PY
}
final_field() {   # final_field LOGDIR NODE FIELD
  python3 -c "import json,sys; r=[json.loads(l) for l in open('$1/node-$2.jsonl') if '\"final\"' in l][-1]; v=r.get('$3'); print(v if not isinstance(v,float) else f'{v:.6g}')"
}
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

common=(--set train.threads=1 --set log.progress=false --set log.every_steps=25)
read -r -a seeds <<< "$SEEDS"
[ "${#seeds[@]}" -ge 1 ] || { echo "--seeds: give at least one seed" >&2; exit 2; }
total=$RUNS; [ "${#seeds[@]}" -gt "$total" ] && total=${#seeds[@]}
ips1=() ips2=() ddp=() accs1=() accs2=() idles=()
for r in $(seq 1 "$total"); do
  if [ "$r" -le "${#seeds[@]}" ]; then   # a full epoch: accuracy and throughput
    seed=${seeds[$((r - 1))]}; limit=(); what="1 epoch, seed $seed"
  else                                   # throughput only
    seed=${seeds[0]}; limit=(--set train.max_steps="$TP_STEPS"); what="$TP_STEPS steps"
  fi
  # ---- 1 node
  "$TETHER" train "$TETHER_ROOT/configs/fmnist-lenet.json" "${common[@]}" --set train.seed="$seed" "${limit[@]}" \
      --set log.dir="$tmp/one$r" > "$tmp/one$r.out" 2>&1 || { echo "1-node run failed:"; tail "$tmp/one$r.out"; exit 1; }
  ips1+=("$(steady_ips "$tmp/one$r" 1)")
  # ---- 2 nodes (a port taken meanwhile: retry with new ones)
  ok=0
  for attempt in 1 2 3; do
    read -r p0 p1 < <(free_ports 2)
    cluster_config "$tmp/two$r.json" "$p0" "$p1"
    rm -rf "$tmp/two$r"
    pids=()
    for id in 0 1; do
      "$TETHER" train "$tmp/two$r.json" --node $id "${common[@]}" --set train.seed="$seed" "${limit[@]}" \
          --set log.dir="$tmp/two$r" > "$tmp/two$r.node$id.out" 2>&1 &
      pids+=($!)
    done
    rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done
    if [ $rc = 0 ]; then ok=1; break; fi
    grep -q "cannot bind" "$tmp"/two$r.node*.out || break
  done
  [ $ok = 1 ] || { echo "2-node run failed:"; tail "$tmp"/two$r.node*.out; exit 1; }
  ips2+=("$(steady_ips "$tmp/two$r" 2)")
  h0=$(final_field "$tmp/two$r" 0 params_hash); h1=$(final_field "$tmp/two$r" 1 params_hash)
  [ "$h0" = "$h1" ] || { echo "2-node run $r: params_hash differs between nodes ($h0 vs $h1)"; exit 1; }
  acc_note=""
  if [ -z "${limit[*]}" ]; then
    a1=$(final_field "$tmp/one$r" 0 test_acc); a2=$(final_field "$tmp/two$r" 0 test_acc)
    accs1+=("$a1"); accs2+=("$a2"); idles+=("$(final_field "$tmp/two$r" 0 idle_frac_total)")
    acc_note=", test acc 1 node $a1, 2 nodes $a2"
  fi
  # ---- PyTorch DDP, 2 processes x 1 thread
  port=$(free_ports 1)
  out=$("$PY" "$PEERS/bench_ddp.py" --world 2 --threads 1 --model cnn --batch 64 --warmup 20 \
        --steps "$DDP_STEPS" --port "$port" 2>&1 | grep RESULT || true)
  d=$(echo "$out" | sed -n 's/.*total=\([0-9.]*\).*/\1/p')
  [ -n "$d" ] || { echo "DDP run failed: $out"; exit 1; }
  ddp+=("$d")
  echo "run $r ($what): tether 1 node ${ips1[-1]} img/s, 2 nodes ${ips2[-1]} img/s (sum), DDP 2 procs $d img/s$acc_note"
done
acc1=$(med "${accs1[@]}"); acc2=$(med "${accs2[@]}"); idle=$(med "${idles[@]}")
m1=$(med "${ips1[@]}"); m2=$(med "${ips2[@]}"); md=$(med "${ddp[@]}")
a1=$(python3 -c "print(f'{$acc1 * 100:.2f}')"); a2=$(python3 -c "print(f'{$acc2 * 100:.2f}')")
speedup=$(python3 -c "print(f'{$m2 / $m1:.3f}')"); ratio=$(python3 -c "print(f'{$m2 / $md:.3f}')")
echo "2-node settings: overlap s=$STALENESS H=$PERIOD ring, batch 64 per node, scale_lr=$SCALE_LR (lr 0.05$([ "$SCALE_LR" = true ] && echo " x 2")), warmup_epochs=$([ "$SCALE_LR" = true ] && echo "$WARMUP_EPOCHS" || echo 0); 2-node idle_frac_total (median of the epoch runs, node 0) $idle"
echo "accuracy after 1 epoch, median over seeds ${SEEDS}: 1 node $a1%, 2 nodes $a2% (diff $(python3 -c "print(f'{$a2 - $a1:+.2f}')") points)"
echo "RESULT speedup=$speedup acc_1=$a1 acc_2=$a2 tether_2_ips=$m2 ddp_2_ips=$md ratio_vs_ddp=$ratio"
