#!/usr/bin/env bash
# The paper's experiment: asynchronous SGD without gradient delay against
# synchronous data-parallel SGD on a commodity switch, N = 1, 2, 4 nodes.
#
#   bench/paper.sh [--rate 500mbit] [--real "1 2 4"] [--synthetic "1 2 4 8 16"]
#                  [--step-ms 100] [--steps 100] [--epochs 1] [--scale-lr]
#
# Every case runs on the emulated switch of scripts/switch.sh (N network
# namespaces on one bridge, every port shaped to RATE with tc tbf), lenet,
# ring mixer, `sync` (s = 0) against `overlap` (s = 2), H = 1.
# - real rows: lenet on Fashion-MNIST for --epochs epochs (same total
#   epochs for every N; each node 1 thread; lr 0.05 everywhere, or with
#   --scale-lr the linear scaling rule, lr x N with 0.2 epochs of warm-up).
#   This machine has 2 cores: the
#   nodes of one case share them, so real rows show accuracy and idle time
#   more than speed-up.
# - synthetic rows (train.compute = synthetic): each step sleeps --step-ms
#   without using the CPU and applies a random update of lenet's size, so
#   the runtime's own scaling shows, N up to 16 on 2 cores.
# Link rate and step time are chosen so that one ring merge of lenet's
# 1.8 MB costs about half a step: `sync` waits for it, `overlap` hides it.
# Prints one table (speed-up over one node, idle fraction, test accuracy,
# largest pairwise distance, bytes sent per step per node) and ends with
#   RESULT rate=... sync_idle_4=... overlap_idle_4=... overlap_speedup_4=... acc_1=... acc_overlap_4=... synth_overlap_speedup_16=...
# Needs root (network namespaces); falls back to loopback with the rate
# emulated in tether's transport (net.inject_rate_mbps) otherwise, and says so.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
RATE=400mbit REAL="1 2 4" SYNTH="1 2 4 8 16" STEP_MS=100 STEPS=100 EPOCHS=1 SCALE_LR=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2;; --real) REAL=$2; shift 2;; --synthetic) SYNTH=$2; shift 2;;
    --step-ms) STEP_MS=$2; shift 2;; --steps) STEPS=$2; shift 2;; --epochs) EPOCHS=$2; shift 2;;
    --scale-lr) SCALE_LR=1; shift;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ "${SKIP_BUILD:-0}" = 1 ] || build_tether
export TETHER=${TETHER:-$BUILD_DIR/tether}
SWITCH="$TETHER_ROOT/scripts/switch.sh"
tmp=$(mktemp -d); results="$tmp/results.jsonl"
MODE=netns
cleanup() { [ "$MODE" = netns ] && "$SWITCH" down >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! ip netns add tether-probe-$$ 2>/dev/null; then MODE=loopback; else ip netns del tether-probe-$$; fi
rate_mbps=$(python3 -c "
import re, sys
m = re.fullmatch(r'([0-9.]+)([kmg]?)bit', sys.argv[1]); f = {'k': 1e-3, 'm': 1, 'g': 1e3, '': 1e-6}
print(float(m.group(1)) * f[m.group(2)])" "$RATE")
log "switch: $MODE, $RATE per port; real rows N = $REAL; synthetic rows N = $SYNTH (step $STEP_MS ms, $STEPS steps)"

# make_config N ALGO KIND -> path of a config for this case
make_config() {
  python3 - "$@" <<'PY'
import json, sys
n, algo, kind, tmp, rate, mode, step_ms, steps, epochs, scale_lr = sys.argv[1:11]
n = int(n)
host = (lambda i: f"10.77.0.{i + 1}") if mode == "netns" else (lambda i: "127.0.0.1")
port = (lambda i: 5550) if mode == "netns" else (lambda i: 25550 + i)
cfg = {
    "model": {"name": "lenet"},
    "optimizer": {"lr": 0.05, "momentum": 0.9},
    "algorithm": {"name": algo, "staleness": 2, "period": 1, "mixer": "ring"},
    "train": {"seed": 1, "threads": 1, "epochs": int(epochs)},
    "log": {"dir": f"{tmp}/{kind}-{algo}-{n}", "every_steps": 20, "progress": False},
    "net": {"connect_timeout_ms": 60000, "peer_timeout_ms": 10000},
}
if n > 1:
    cfg["cluster"] = {"peers": [{"id": i, "host": host(i), "port": port(i)} for i in range(n)]}
    if kind == "real" and scale_lr == "1":
        cfg["optimizer"].update({"scale_lr": True, "warmup_epochs": 0.2})
if mode == "loopback" and n > 1:
    cfg["net"]["inject_rate_mbps"] = float(rate)
if kind == "real":
    cfg["data"] = {"name": "fashion-mnist", "batch_size": 64}
else:
    steps = int(steps)
    cfg["data"] = {"name": "synthetic", "batch_size": 64, "synthetic_train": 64 * n * 10, "synthetic_test": 64}
    cfg["train"].update({"compute": "synthetic", "synthetic_step_ms": float(step_ms), "epochs": steps // 10})
path = f"{tmp}/{kind}-{algo}-{n}.json"
json.dump(cfg, open(path, "w"), indent=1)
print(path)
PY
}

# run_case N ALGO KIND: runs it and appends a summary line to $results
run_case() {
  local n=$1 algo=$2 kind=$3 cfg rc
  cfg=$(make_config "$n" "$algo" "$kind" "$tmp" "$rate_mbps" "$MODE" "$STEP_MS" "$STEPS" "$EPOCHS" "$SCALE_LR")
  local start; start=$(date +%s.%N)
  if [ "$n" -eq 1 ]; then
    "$TETHER" train "$cfg" >"$tmp/out" 2>&1; rc=$?
  elif [ "$MODE" = netns ]; then
    "$SWITCH" down >/dev/null 2>&1
    "$SWITCH" up "$n" "$RATE" >/dev/null 2>&1 || { echo "switch up $n $RATE failed" >&2; return 1; }
    "$SWITCH" run "$cfg" >"$tmp/out" 2>&1; rc=$?
    "$SWITCH" down >/dev/null 2>&1
  else
    "$TETHER_ROOT/scripts/local-cluster.sh" "$cfg" >"$tmp/out" 2>&1; rc=$?
  fi
  local end; end=$(date +%s.%N)
  if [ $rc -ne 0 ]; then echo "case $kind $algo N=$n failed (exit $rc):"; tail -n 20 "$tmp/out"; return 1; fi
  python3 - "$tmp/$kind-$algo-$n" "$n" "$algo" "$kind" "$start" "$end" >>"$results" <<'PY'
import glob, json, sys
d, n, algo, kind, start, end = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
fins = []
for p in sorted(glob.glob(d + "/node-*.jsonl")):
    recs = [json.loads(l) for l in open(p)]
    fins.append([r for r in recs if r.get("event") == "final"][-1])
    steady = [r for r in recs if "images_per_s" in r and "event" not in r][1:-1]
    fins[-1]["ips"] = sum(r["images_per_s"] for r in steady) / max(1, len(steady))
    # training throughput excludes start-up and the final evaluation
print(json.dumps({
    "n": n, "algo": algo, "kind": kind,
    "ips": sum(f["ips"] for f in fins),
    "idle": sum(f.get("idle_frac_total", 0.0) for f in fins) / len(fins),
    "acc": fins[0].get("test_acc"),
    "dist": max(f.get("max_pair_dist_run", 0.0) for f in fins),
    "bound": max(f.get("bound", 0.0) for f in fins),
    "bytes_per_step": sum(f.get("bytes_sent", 0) / max(1, f["steps"]) for f in fins) / len(fins),
    "same_hash": len({f["params_hash"] for f in fins}) == 1,
    "wall_s": end - start}))
PY
  tail -n 1 "$results" | python3 -c "
import json, sys; r = json.loads(sys.stdin.read())
print(f\"  {r['kind']:<9} {r['algo']:<7} N={r['n']:<2} {r['ips']:8.0f} img/s  idle {r['idle']*100:5.1f}%  wall {r['wall_s']:.0f}s\")"
}

for kind in real synthetic; do
  list=$REAL; [ $kind = synthetic ] && list=$SYNTH
  for n in $list; do
    for algo in sync overlap; do
      [ "$n" -eq 1 ] && [ $algo = overlap ] && continue   # one node: nothing to average
      run_case "$n" "$algo" "$kind" || exit 1
    done
  done
done

python3 - "$results" "$RATE" "$MODE" "$STEP_MS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate, mode, step_ms = sys.argv[2], sys.argv[3], sys.argv[4]
base = {r["kind"]: r["ips"] for r in rows if r["n"] == 1}
print()
print(f"lenet (454,922 parameters, 1.82 MB per round), ring, H = 1, switch {rate} per port ({mode})")
print(f"{'rows':<10} {'algorithm':<12} {'N':>3} {'speed-up':>9} {'idle':>7} {'test acc':>9} {'max dist':>9} {'bound':>8} {'MB/step':>8}")
for r in rows:
    algo = "one node" if r["n"] == 1 else ("sync s=0" if r["algo"] == "sync" else "overlap s=2")
    acc = f"{r['acc'] * 100:.2f}%" if r.get("acc") is not None else "n/a"
    kind = "real" if r["kind"] == "real" else f"synth {step_ms}ms"
    print(f"{kind:<10} {algo:<12} {r['n']:>3} {r['ips'] / base[r['kind']]:>8.2f}x {r['idle'] * 100:>6.1f}% {acc:>9} "
          f"{r['dist']:>9.3g} {r['bound']:>8.3g} {r['bytes_per_step'] / 1e6:>8.2f}")
def get(kind, algo, n, key):
    for r in rows:
        if r["kind"] == kind and r["n"] == n and (n == 1 or r["algo"] == algo):
            return r[key]
    return None
real_n = max([r["n"] for r in rows if r["kind"] == "real"], default=1)
syn_n = max([r["n"] for r in rows if r["kind"] == "synthetic"], default=1)
fmt = lambda v, f: "na" if v is None else f.format(v)
print("RESULT rate=%s mode=%s sync_idle_%d=%s overlap_idle_%d=%s overlap_speedup_%d=%s acc_1=%s acc_overlap_%d=%s "
      "synth_sync_idle_%d=%s synth_overlap_idle_%d=%s synth_overlap_speedup_%d=%s" % (
    rate, mode,
    real_n, fmt(get("real", "sync", real_n, "idle"), "{:.3f}"),
    real_n, fmt(get("real", "overlap", real_n, "idle"), "{:.3f}"),
    real_n, fmt((get("real", "overlap", real_n, "ips") or 0) / base.get("real", 1), "{:.2f}"),
    fmt((get("real", "sync", 1, "acc") or 0) * 100, "{:.2f}"),
    real_n, fmt((get("real", "overlap", real_n, "acc") or 0) * 100, "{:.2f}"),
    syn_n, fmt(get("synthetic", "sync", syn_n, "idle"), "{:.3f}"),
    syn_n, fmt(get("synthetic", "overlap", syn_n, "idle"), "{:.3f}"),
    syn_n, fmt((get("synthetic", "overlap", syn_n, "ips") or 0) / base.get("synthetic", 1), "{:.2f}")))
PY
