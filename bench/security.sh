#!/usr/bin/env bash
# What CurveZMQ costs, against plaintext (net.security "none") in the same run:
#  1. images/s of 4 nodes training lenet on scripts/switch.sh (network
#     namespaces, a tc tbf per port; needs root) at 1 Gbit/s and 100 Mbit/s.
#     Steps are synthetic (train.compute "synthetic": a sleep of --step-ms and
#     a random update of lenet's size), so that the machine's few cores
#     measure the runtime and the link, not four models' compute; every
#     round's all-reduce of lenet's 454,922 floats goes over the switch.
#     --runs runs of each mode, alternating; images/s = the mean over the
#     nodes of each node's mean images_per_s after its first logging window;
#     median over runs. Every run must end with one params_hash.
#  2. bench/net/allreduce_bench: the all-reduce of bench/allreduce.sh (44 MB,
#     4 processes, loopback), --runs runs of each mode alternating, median.
# Ends with: RESULT curve_over_none_1gbit=... curve_over_none_100mbit=...
#   allreduce_none_ms=... allreduce_curve_ms=... allreduce_ratio=... hash_ms=... hash_share_curve=...
#  3. bench/net/hash_cost: what the payload hash (with the finite check)
#     costs a node in that all-reduce, as a share of its time with CURVE.
#   bench/security.sh [--runs 3] [--step-ms 100] [--steps 60] [--no-switch]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
RUNS=3 STEP_MS=100 STEPS=60 SWITCH_RUNS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2;; --step-ms) STEP_MS=$2; shift 2;; --steps) STEPS=$2; shift 2;;
    --no-switch) SWITCH_RUNS=0; shift;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ "${SKIP_BUILD:-0}" = 1 ] || build_tether
export TETHER=${TETHER:-$BUILD_DIR/tether}
ninja -C "$BUILD_DIR" bench/net/allreduce_bench bench/net/hash_cost >/dev/null
SWITCH="$TETHER_ROOT/scripts/switch.sh"
tmp=$(mktemp -d)
cleanup() { [ "$SWITCH_RUNS" = 1 ] && "$SWITCH" down >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), commit $(git -C "$TETHER_ROOT" rev-parse --short HEAD 2>/dev/null)"
median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

# images/s of one run: mean over the nodes of each node's steady images_per_s;
# fails unless every node ended with the same params_hash.
run_ips() {
  python3 - "$1" <<'PY'
import glob, json, sys
ips, hashes = [], set()
for f in sorted(glob.glob(sys.argv[1] + "/node-*.jsonl")):
    recs = [json.loads(l) for l in open(f)]
    steady = [r["images_per_s"] for r in recs if "images_per_s" in r and "event" not in r][1:]
    hashes.update(r["params_hash"] for r in recs if r.get("event") == "final")
    ips.append(sum(steady) / len(steady))
if len(ips) != 4 or len(hashes) != 1:
    sys.exit(f"run incomplete: {len(ips)} nodes, params_hash values {hashes}")
print(f"{sum(ips) / len(ips):.1f}")
PY
}

result=""
if [ "$SWITCH_RUNS" = 1 ]; then
  ip netns add tether-probe-$$ 2>/dev/null || { echo "switch runs need root and network namespaces (--no-switch skips them)" >&2; exit 2; }
  ip netns del tether-probe-$$
  for rate in 1gbit 100mbit; do
    "$SWITCH" down >/dev/null 2>&1
    "$SWITCH" up 4 "$rate" >/dev/null || exit 1
    declare -A ips=([curve]="" [none]="")
    for r in $(seq 1 "$RUNS"); do
      for mode in none curve; do
        dir=$tmp/$rate-$mode-$r
        "$SWITCH" run "$TETHER_ROOT/configs/switch-4.json" --set net.security=$mode \
          --set data.name=synthetic --set data.synthetic_train=$((64 * 4 * STEPS)) --set data.synthetic_test=64 \
          --set train.compute=synthetic --set train.synthetic_step_ms="$STEP_MS" --set log.dir="$dir" \
          --set log.progress=false --set train.eval_every_epochs=0 > "$dir.out" 2>&1 \
          || { tail -n 20 "$dir.out"; exit 1; }
        v=$(run_ips "$dir") || exit 1
        echo "$rate $mode run $r: $v img/s (mean per node)"
        ips[$mode]="${ips[$mode]} $v"
      done
    done
    c=$(median ${ips[curve]}); n=$(median ${ips[none]})
    ratio=$(python3 -c "print(f'{$c / $n:.3f}')")
    echo "$rate: median curve $c img/s, none $n img/s, curve/none $ratio"
    result="$result curve_over_none_$rate=$ratio"
  done
fi

ar() {   # ar [--curve]: median all-reduce time (ms) of one allreduce_bench run, checked
  local out; out=$("$BUILD_DIR/bench/net/allreduce_bench" --iters 10 --warmup 2 "$@") || { echo "$out" >&2; return 1; }
  echo "$out" | grep '^TETHER' | grep -q ' wrong=0 ' || { echo "$out" >&2; return 1; }
  echo "$out" | sed -n 's/^TETHER.* median=\([0-9.]*\) ms.*/\1/p'
}
a_none=() a_curve=()
for r in $(seq 1 "$RUNS"); do
  v=$(ar) || exit 1
  a_none+=("$v")
  v=$(ar --curve) || exit 1
  a_curve+=("$v")
  echo "all-reduce 44 MB x 4 on loopback, run $r: none ${a_none[-1]} ms, curve ${a_curve[-1]} ms"
done
an=$(median "${a_none[@]}"); ac=$(median "${a_curve[@]}")
# 3. what the payload hash costs a node in that all-reduce (the bytes it
# sends and receives, hashed with the finite check at the rate measured on
# the same 44 MB vector), against the all-reduce's time with CURVE
hash_out=$("$BUILD_DIR/bench/net/hash_cost" --nodes 4) || { echo "$hash_out" >&2; exit 1; }
echo "$hash_out" | head -n 1
hash_ms=$(echo "$hash_out" | sed -n 's/^RESULT.* allreduce_hash_ms=\([0-9.]*\).*/\1/p')
echo "payload hash per node per all-reduce: $hash_ms ms, $(python3 -c "print(f'{100 * $hash_ms / $ac:.1f}')") % of the all-reduce with CURVE"
echo "RESULT${result} allreduce_none_ms=$an allreduce_curve_ms=$ac allreduce_ratio=$(python3 -c "print(f'{$ac / $an:.3f}')") hash_ms=$hash_ms hash_share_curve=$(python3 -c "print(f'{$hash_ms / $ac:.4f}')")"
