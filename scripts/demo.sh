#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: four tether nodes
# on this machine training lenet on Fashion-MNIST together over ZeroMQ
# (configs/local-4.json: overlap averaging, staleness 2, a round every 4
# local steps, ring all-reduce).
# Ends with each node's test accuracy, the run's idle fraction and its
# largest pairwise parameter distance against the bound.
#   scripts/demo.sh [extra tether args, e.g. --set train.epochs=2]
#   CONFIG=configs/fmnist-lenet.json scripts/demo.sh    # one node instead
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CONFIG=${CONFIG:-configs/local-4.json}
build_tether
cd "$TETHER_ROOT"
LOG_DIR=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["log"]["dir"])' "$CONFIG")
rm -f "$LOG_DIR"/node-*.jsonl
log "training with $CONFIG (metrics in $LOG_DIR/)"
set +e
scripts/local-cluster.sh "$CONFIG" "$@"
rc=$?
set -e
python3 - "$LOG_DIR" <<'PY'
import glob, json, sys
rows = []
for path in sorted(glob.glob(sys.argv[1] + "/node-*.jsonl")):
    recs = [json.loads(l) for l in open(path)]
    fin = [r for r in recs if r.get("event") == "final"]
    if fin:
        rows.append(fin[-1])
if not rows:
    sys.exit("no final records")
print(f"{'node':>4} {'steps':>6} {'test_acc':>9} {'idle':>7} {'max_pair_dist':>14} {'bound':>8} {'params_hash':>17}")
for r in rows:
    acc = r.get("test_acc")
    print(f"{r['node']:>4} {r['steps']:>6} {acc * 100 if acc is not None else float('nan'):>8.2f}% "
          f"{r.get('idle_frac_total', 0) * 100:>6.2f}% {r.get('max_pair_dist_run', 0):>14.4g} "
          f"{r.get('bound', 0):>8.4g} {r['params_hash']:>17}")
idle = sum(r.get("idle_frac_total", 0) for r in rows) / len(rows)
print(f"run: idle fraction {idle * 100:.2f}% (mean over nodes), largest pairwise distance "
      f"{max(r.get('max_pair_dist_run', 0) for r in rows):.4g} (bound {max(r.get('bound', 0) for r in rows):.4g}), "
      f"identical final models: {len({r['params_hash'] for r in rows}) == 1}")
PY
exit $rc
