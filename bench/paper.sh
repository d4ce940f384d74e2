#!/usr/bin/env bash
# The paper's experiment: asynchronous SGD without gradient delay against
# synchronous data-parallel SGD on a commodity switch, N = 1, 2, 4 nodes.
#
#   bench/paper.sh [--rate 500mbit] [--real "1 2 4"] [--synthetic "1 2 4 8 16"]
#                  [--step-ms 100] [--steps 100] [--epochs 1] [--scale-lr]
#                  [--baselines "100mbit 1gbit"] [--baseline-n 4]
#                  [--baseline-algos "sync overlap local-sgd downpour easgd"]
#                  [--downpour-lr 0.0125] [--downpour-momentum 0.9] [--out DIR]
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
# - baseline rows (--baselines RATES, default none): for every link rate of
#   RATES, real rows at N = --baseline-n (4) for each algorithm of the seed's
#   comparison -- sync, overlap (s = 2), local-sgd (H = 4), downpour
#   (n_push = n_fetch = 1), easgd (tau = 4, alpha = 0.9/N) -- with the real
#   rows' settings (lenet, Fashion-MNIST, --epochs epochs, lr 0.05,
#   momentum 0.9; downpour: its own, below): test accuracy at equal epochs,
#   idle fraction, images/s, largest pairwise distance. Pass --real "1" to
#   get the one-node reference. --baseline-algos picks a subset (default all
#   five).
# - Downpour gets its own tuned rate: --downpour-lr (default 0.0125 = 0.05/N
#   at N = 4; not rescaled by --baseline-n) and --downpour-momentum (default
#   0.9); every other row keeps lr 0.05, momentum 0.9. At lr 0.05 Downpour
#   does not train reliably at N = 4 (10 % and 64.9 % in two runs: every
#   worker's update lands on the servers unscaled, N per server step and a
#   few steps late). The default is the best test accuracy of a 1-epoch scan
#   at N = 4 (docs/performance.md, "The baselines on the emulated switch").
#   The table marks the row "downpour*" and prints its lr and momentum.
# - --out DIR keeps every case's log directory (DIR/<case>/), its HTML report
#   (DIR/<case>.html, `tether report`), the summary lines (DIR/results.jsonl)
#   and the training loss against samples seen (step x 64 x N, node 0's
#   records), one chart per kind and link rate, one line per algorithm:
#   DIR/loss_vs_samples.json drawn by `tether report --chart` into
#   DIR/loss_vs_samples.html.
# Prints one table (link rate, speed-up over one node, images/s, idle
# fraction, test accuracy, largest pairwise distance, bytes sent per step per
# node) and ends with
#   RESULT rate=... sync_idle_4=... overlap_idle_4=... overlap_speedup_4=... acc_1=... acc_overlap_4=... synth_overlap_speedup_16=...
#          [base_100mbit_downpour_acc_4=... base_100mbit_downpour_idle_4=... base_100mbit_downpour_ips_4=... ...]
# Needs root (network namespaces); falls back to loopback with the rate
# emulated in tether's transport (net.inject_rate_mbps) otherwise, and says so.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
RATE=400mbit REAL="1 2 4" SYNTH="1 2 4 8 16" STEP_MS=100 STEPS=100 EPOCHS=1 SCALE_LR=0 BASELINES="" BASE_N=4 OUT=""
BASE_ALGOS="sync overlap local-sgd downpour easgd" DP_LR=0.0125 DP_MOM=0.9
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) RATE=$2; shift 2;; --real) REAL=$2; shift 2;; --synthetic) SYNTH=$2; shift 2;;
    --step-ms) STEP_MS=$2; shift 2;; --steps) STEPS=$2; shift 2;; --epochs) EPOCHS=$2; shift 2;;
    --scale-lr) SCALE_LR=1; shift;;
    --baselines) BASELINES=$2; shift 2;; --baseline-n) BASE_N=$2; shift 2;; --out) OUT=$2; shift 2;;
    --baseline-algos) BASE_ALGOS=$2; shift 2;;
    --downpour-lr) DP_LR=$2; shift 2;; --downpour-momentum) DP_MOM=$2; shift 2;;
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
mbps_of() {
  python3 -c "
import re, sys
m = re.fullmatch(r'([0-9.]+)([kmg]?)bit', sys.argv[1])
if not m: sys.exit(f'bad link rate {sys.argv[1]!r} (e.g. 100mbit, 1gbit)')
f = {'k': 1e-3, 'm': 1, 'g': 1e3, '': 1e-6}
print(float(m.group(1)) * f[m.group(2)])" "$1"
}
rate_mbps=$(mbps_of "$RATE") || exit 2
for r in $BASELINES; do mbps_of "$r" >/dev/null || exit 2; done
for a in $BASE_ALGOS; do
  case "$a" in sync|overlap|local-sgd|downpour|easgd) ;; *) echo "--baseline-algos: unknown algorithm $a" >&2; exit 2;; esac
done
python3 -c "import sys; lr, m = float(sys.argv[1]), float(sys.argv[2]); sys.exit(not (lr > 0 and 0 <= m < 1))" \
  "$DP_LR" "$DP_MOM" 2>/dev/null || { echo "--downpour-lr must be > 0, --downpour-momentum in [0, 1)" >&2; exit 2; }
if [ -n "$OUT" ]; then mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2; fi
log "switch: $MODE, $RATE per port; real rows N = $REAL; synthetic rows N = $SYNTH (step $STEP_MS ms, $STEPS steps)"
[ -z "$BASELINES" ] || log "baseline rows: N = $BASE_N at ${BASELINES// /, } ($BASE_ALGOS; downpour lr $DP_LR, momentum $DP_MOM)"

# make_config N ALGO KIND -> path of a config for this case
make_config() {
  python3 - "$@" <<'PY'
import json, sys
n, algo, kind, tmp, rate, mode, step_ms, steps, epochs, scale_lr, case, dp_lr, dp_mom = sys.argv[1:14]
n = int(n)
host = (lambda i: f"10.77.0.{i + 1}") if mode == "netns" else (lambda i: "127.0.0.1")
port = (lambda i: 5550) if mode == "netns" else (lambda i: 25550 + i)
cfg = {
    "model": {"name": "lenet"},
    "optimizer": {"lr": 0.05, "momentum": 0.9},
    "algorithm": {"name": algo, "staleness": 2, "period": 1, "mixer": "ring"},
    "train": {"seed": 1, "threads": 1, "epochs": int(epochs)},
    "log": {"dir": f"{tmp}/{case}", "every_steps": 20, "progress": False},
    "net": {"connect_timeout_ms": 60000, "peer_timeout_ms": 10000},
}
# The baselines as bench/discrepancy.sh runs them.
if algo == "local-sgd":
    cfg["algorithm"] = {"name": algo, "period": 4}
elif algo == "downpour":
    cfg["algorithm"] = {"name": algo, "n_push": 1, "n_fetch": 1}
    cfg["optimizer"] = {"lr": float(dp_lr), "momentum": float(dp_mom)}   # its own tuned rate (--downpour-lr)
elif algo == "easgd":
    cfg["algorithm"] = {"name": algo, "alpha": min(0.5, 0.9 / n), "tau": 4}
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
path = f"{tmp}/{case}.json"
json.dump(cfg, open(path, "w"), indent=1)
print(path)
PY
}

# run_case N ALGO KIND [RATE]: runs it (on a switch of RATE, default --rate)
# and appends a summary line to $results
run_case() {
  local n=$1 algo=$2 kind=$3 rate=${4:-$RATE} cfg rc mbps case
  mbps=$(mbps_of "$rate") || return 1
  case="$kind-$algo-$n"; [ "$kind" = baseline ] && case="$kind-$rate-$algo-$n"
  cfg=$(make_config "$n" "$algo" "$([ "$kind" = synthetic ] && echo synthetic || echo real)" "$tmp" "$mbps" "$MODE" \
        "$STEP_MS" "$STEPS" "$EPOCHS" "$SCALE_LR" "$case" "$DP_LR" "$DP_MOM")
  local start; start=$(date +%s.%N)
  if [ "$n" -eq 1 ]; then
    "$TETHER" train "$cfg" >"$tmp/out" 2>&1; rc=$?
  elif [ "$MODE" = netns ]; then
    "$SWITCH" down >/dev/null 2>&1
    "$SWITCH" up "$n" "$rate" >/dev/null 2>&1 || { echo "switch up $n $rate failed" >&2; return 1; }
    "$SWITCH" run "$cfg" >"$tmp/out" 2>&1; rc=$?
    "$SWITCH" down >/dev/null 2>&1
  else
    "$TETHER_ROOT/scripts/local-cluster.sh" "$cfg" >"$tmp/out" 2>&1; rc=$?
  fi
  local end; end=$(date +%s.%N)
  if [ $rc -ne 0 ]; then echo "case $kind $algo N=$n failed (exit $rc):"; tail -n 20 "$tmp/out"; return 1; fi
  python3 - "$tmp/$case" "$n" "$algo" "$kind" "$start" "$end" "$rate" "$case" "$cfg" >>"$results" <<'PY'
import glob, json, sys
d, n, algo, kind, start, end = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
rate, case = sys.argv[7], sys.argv[8]
opt = json.load(open(sys.argv[9]))["optimizer"]
fins = []
loss = []   # node 0's training loss against samples seen by all nodes (step x batch x N)
for p in sorted(glob.glob(d + "/node-*.jsonl")):
    recs = [json.loads(l) for l in open(p)]
    if not loss:
        loss = [[r["step"] * 64 * n, r["loss"]] for r in recs if "loss" in r and "step" in r and "event" not in r]
    fins.append([r for r in recs if r.get("event") == "final"][-1])
    steady = [r for r in recs if "images_per_s" in r and "event" not in r][1:-1]
    fins[-1]["ips"] = sum(r["images_per_s"] for r in steady) / max(1, len(steady))
    # training throughput excludes start-up and the final evaluation
print(json.dumps({
    "n": n, "algo": algo, "kind": kind, "rate": rate, "case": case, "loss_vs_samples": loss,
    "lr": opt["lr"], "momentum": opt["momentum"],
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
print(f\"  {r['kind']:<9} {r['rate']:<8} {r['algo']:<9} N={r['n']:<2} {r['ips']:8.0f} img/s  idle {r['idle']*100:5.1f}%  wall {r['wall_s']:.0f}s\")"
  if [ -n "$OUT" ]; then
    rm -rf "${OUT:?}/$case"; cp -r "$tmp/$case" "$OUT/$case"; cp "$cfg" "$OUT/$case/config.json"
    "$TETHER" report "$OUT/$case" -o "$OUT/$case.html" --link-mbps "$mbps" --title "$case ($rate)" >/dev/null ||
      echo "tether report $OUT/$case failed" >&2
  fi
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
for rate in $BASELINES; do
  for algo in $BASE_ALGOS; do
    run_case "$BASE_N" "$algo" baseline "$rate" || exit 1
  done
done
[ -z "$OUT" ] || cp "$results" "$OUT/results.jsonl"

python3 - "$results" "$RATE" "$MODE" "$STEP_MS" "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate, mode, step_ms, out = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
base = {r["kind"]: r["ips"] for r in rows if r["n"] == 1}
base["baseline"] = base.get("real")   # baseline rows: lenet on Fashion-MNIST, as the real rows
names = {"sync": "sync s=0", "overlap": "overlap s=2", "local-sgd": "local-sgd H=4", "downpour": "downpour",
         "easgd": "easgd"}
print()
print(f"lenet (454,922 parameters, 1.82 MB per round), ring, H = 1, switch {rate} per port ({mode}); "
      f"baseline rows at their own rate")
print(f"{'rows':<10} {'rate':<8} {'algorithm':<14} {'N':>3} {'img/s':>7} {'speed-up':>9} {'idle':>7} {'test acc':>9} "
      f"{'max dist':>9} {'bound':>8} {'MB/step':>8}")
for r in rows:
    algo = "one node" if r["n"] == 1 else names.get(r["algo"], r["algo"])
    if r["algo"] == "downpour":
        algo += "*"   # its own lr and momentum, below the table
    acc = f"{r['acc'] * 100:.2f}%" if r.get("acc") is not None else "n/a"
    kind = {"real": "real", "baseline": "baseline"}.get(r["kind"], f"synth {step_ms}ms")
    speedup = f"{r['ips'] / base[r['kind']]:>8.2f}x" if base.get(r["kind"]) else f"{'n/a':>9}"
    print(f"{kind:<10} {r.get('rate', rate):<8} {algo:<14} {r['n']:>3} {r['ips']:>7.0f} {speedup} {r['idle'] * 100:>6.1f}% "
          f"{acc:>9} {r['dist']:>9.3g} {r['bound']:>8.3g} {r['bytes_per_step'] / 1e6:>8.2f}")
for lr, m in dict.fromkeys((r["lr"], r["momentum"]) for r in rows if r["algo"] == "downpour"):
    print(f"* downpour: its own tuned rate, lr {lr:g}, momentum {m:g} (--downpour-lr, --downpour-momentum); "
          f"every other row lr 0.05, momentum 0.9")
if out:
    # The training loss against samples seen: one chart per kind and rate, a line per algorithm.
    charts = []
    one = [r for r in rows if r["n"] == 1 and r["kind"] == "real" and r["loss_vs_samples"]]
    for kind in ("real", "baseline"):
        for rt in dict.fromkeys(r["rate"] for r in rows if r["kind"] == kind and r["n"] > 1):
            series = [{"name": f"{names.get(r['algo'], r['algo'])}, N = {r['n']}", "group": r["algo"],
                       "points": r["loss_vs_samples"]}
                      for r in rows if r["kind"] == kind and r["rate"] == rt and r["n"] > 1]
            series += [{"name": "one node", "group": "one node", "dashed": True, "points": r["loss_vs_samples"]}
                       for r in one]
            charts.append({"title": f"Training loss against samples seen, {kind} rows, {rt} per port",
                           "xlabel": "samples seen, all nodes (step x 64 x N; node 0's records)",
                           "ylabel": "training loss (node 0)", "series": series})
    if charts:
        json.dump({"title": f"bench/paper.sh: training loss against samples seen ({mode})", "charts": charts},
                  open(f"{out}/loss_vs_samples.json", "w"), indent=1)
def get(kind, algo, n, key):
    for r in rows:
        if r["kind"] == kind and r["n"] == n and (n == 1 or r["algo"] == algo):
            return r[key]
    return None
def base_get(rt, algo, key):
    for r in rows:
        if r["kind"] == "baseline" and r["rate"] == rt and r["algo"] == algo:
            return r[key] * 100 if key == "acc" and r[key] is not None else r[key]   # acc in %, as acc_1
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
    syn_n, fmt((get("synthetic", "overlap", syn_n, "ips") or 0) / base.get("synthetic", 1), "{:.2f}"))
      + "".join(f" base_{rt}_{algo.replace('-', '_')}_{key}_{n}={fmt(base_get(rt, algo, k), f)}"
                for rt, n in dict.fromkeys((r["rate"], r["n"]) for r in rows if r["kind"] == "baseline")
                for algo in names
                for key, k, f in (("acc", "acc", "{:.2f}"), ("idle", "idle", "{:.3f}"), ("ips", "ips", "{:.0f}"),
                                  ("dist", "dist", "{:.3g}"))))
PY
if [ -n "$OUT" ] && [ -f "$OUT/loss_vs_samples.json" ]; then
  "$TETHER" report --chart "$OUT/loss_vs_samples.json" -o "$OUT/loss_vs_samples.html" || exit 1
fi
