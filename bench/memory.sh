#!/usr/bin/env bash
# Host memory of a training node: tether against PyTorch DDP, the same model
# (the peers' MLP at --hidden; 3000 gives 11,388,010 parameters, P = 43.4 MiB),
# batch, optimizer and steps, measured in one run.
#   bench/memory.sh [--hidden 3000] [--steps 40] [--staleness "0 2"]
# Each side trains the model alone in one process, then as 2 processes on
# 127.0.0.1 (tether: overlap, a round every step, ring, staleness s; DDP:
# gloo). What averaging costs a process is its peak RSS (ru_maxrss: what the
# OOM killer sees) less the one-process run's, printed in MB and in
# multiples of P. tether's runs end with their checkpoint, which counts
# (the arrays are streamed; the checkpoint holds a copy of the parameters,
# the momentum and x̄); DDP's script writes none.
# Ends with: RESULT params_mb=... tether_s<S>_x=... ddp_x=... (per-process
#   averaging overhead in multiples of P; ratio=tether's at the last s / DDP's)
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
HIDDEN=3000 STEPS=40 STALENESS="0 2"
while [ $# -gt 0 ]; do
  case "$1" in
    --hidden) HIDDEN=$2; shift 2;; --steps) STEPS=$2; shift 2;; --staleness) STALENESS=$2; shift 2;;
    *) echo "usage: $0 [--hidden N] [--steps K] [--staleness \"0 2\"]" >&2; exit 2;;
  esac
done
PEERS=${PEERS:-$TETHER_ROOT/../shared/peers}
[ -f "$PEERS/models.py" ] || { echo "peer scripts not found at $PEERS (set PEERS=)" >&2; exit 2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-torch; fi
TETHER=${TETHER:-$BUILD_DIR/tether}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
port=$((5700 + RANDOM % 200))
python3 - "$tmp/cfg.json" "$HIDDEN" "$STEPS" "$port" <<'PY'
import json, sys
path, hidden, steps, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = {
    "device": "cpu",
    "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": port + i} for i in range(2)]},
    "model": {"name": "mlp", "hidden": hidden},
    "data": {"name": "synthetic", "batch_size": 16, "synthetic_train": 16 * (steps + 10), "synthetic_test": 16},
    "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "scale_lr": False},
    "algorithm": {"name": "overlap", "staleness": 2, "period": 1, "mixer": "ring"},
    "net": {"security": "none"},
    "train": {"max_steps": steps, "seed": 1, "threads": 1, "eval_every_epochs": 0},
    "log": {"dir": "runs", "every_steps": 20, "progress": False},
}
json.dump(cfg, open(path, "w"))
del cfg["cluster"]   # the same run on one node
json.dump(cfg, open(path.replace("cfg.json", "one.json"), "w"))
PY
echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "# commit: $(git -C "$TETHER_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
peak() { sed -n 's/^peak_rss_mb=//p' "$1"; }

log "tether: mlp hidden $HIDDEN, $STEPS steps, one process"
python3 "$TETHER_ROOT/bench/peak_rss.py" "$TETHER" train "$tmp/one.json" --set log.dir="$tmp/one" \
  > "$tmp/one.txt" 2>&1 || { cat "$tmp/one.txt" >&2; exit 1; }
t_single=$(peak "$tmp/one.txt")
echo "tether, one process: peak RSS $t_single MB"
declare -A t_pair
for s in $STALENESS; do
  log "tether: 2 nodes, staleness $s"
  pids=()
  for n in 0 1; do
    python3 "$TETHER_ROOT/bench/peak_rss.py" "$TETHER" train "$tmp/cfg.json" --node $n --set algorithm.staleness="$s" \
      --set log.dir="$tmp/s$s" > "$tmp/s$s-$n.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { cat "$tmp"/s$s-*.txt >&2; exit 1; }; done
  t_pair[$s]=$(python3 -c "print(max($(peak "$tmp/s$s-0.txt"), $(peak "$tmp/s$s-1.txt")))")
  echo "tether, 2 nodes, s = $s: peak RSS $(peak "$tmp/s$s-0.txt"), $(peak "$tmp/s$s-1.txt") MB"
done

log "PyTorch DDP: the peers' MLP hidden $HIDDEN, $STEPS steps"
d_out=$(/usr/bin/python3 "$TETHER_ROOT/bench/ddp_memory.py" --peers "$PEERS" --world 2 --hidden "$HIDDEN" \
          --steps "$STEPS" --batch 16 --port $((29500 + RANDOM % 400)) 2>&1) || { echo "$d_out" >&2; exit 1; }
echo "$d_out" | sed 's/^/  /'
params=$(echo "$d_out" | sed -n 's/^RESULT params=\([0-9]*\).*/\1/p')
d_single=$(echo "$d_out" | sed -n 's/^RESULT.* single_mb=\([0-9.]*\).*/\1/p')
d_pair=$(echo "$d_out" | sed -n 's/^RESULT.* ddp_mb=\([0-9.]*\).*/\1/p')

result=$(python3 - "$params" "$t_single" "$d_single" "$d_pair" "$STALENESS" "$(for s in $STALENESS; do echo -n "${t_pair[$s]} "; done)" <<'PY'
import sys
params, t1, d1, d2 = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
ss, pairs = sys.argv[5].split(), [float(v) for v in sys.argv[6].split()]
p_mb = params * 4 / 2**20
ddp_x = (d2 - d1) / p_mb
out = [f"params_mb={p_mb:.1f}"]
for s, t2 in zip(ss, pairs):
    x = (t2 - t1) / p_mb
    print(f"tether s = {s}: averaging costs a process {t2 - t1:.0f} MB = {x:.1f} P", file=sys.stderr)
    out.append(f"tether_s{s}_x={x:.1f}")
print(f"DDP: {d2 - d1:.0f} MB = {ddp_x:.1f} P", file=sys.stderr)
out += [f"ddp_x={ddp_x:.1f}", f"ratio={((pairs[-1] - t1) / p_mb) / ddp_x if ddp_x > 0 else float('inf'):.1f}"]
print(" ".join(out))
PY
)
echo "RESULT $result"
