#!/usr/bin/env bash
# tether against PyTorch DDP on the emulated switch (scripts/switch.sh: N
# network namespaces on one bridge, every port shaped to RATE with tc tbf;
# needs root): the same N, link rate, model (lenet, the peers' "cnn"),
# batch per node, threads (1 per node) and learning rate (SGD 0.05, momentum
# 0.9) on every row.
#
#   bench/switch.sh [--rates "100mbit 1gbit"] [--rows "ddp sync none bf16 int8 auto auto8"]
#                   [--seeds "1 2 3"] [--epochs 1] [--steps K] [--ddp-steps 100]
#                   [--nodes 4] [--batch 64] [--security curve|none] [--out DIR]
#
# Rows (--rows picks and orders them; the tether rows are data, in
# scripts/common.sh, SWITCH_ROW_SETS):
#   ddp   PyTorch DDP (gloo), ../shared/peers/ddp_rank.py, one rank per
#         namespace; its images/s over --ddp-steps timed steps after 10
#         warm-up steps (random data; in --steps mode --steps steps). With
#         epochs its test accuracy comes from the same loop on Fashion-MNIST:
#         examples/pytorch_fmnist.py --backend ddp, one rank per namespace,
#         the same shards, batches and epochs as the tether rows.
#   sync  `tether train`, algorithm sync (staleness 0, period 1), ring
#   none, bf16, int8   overlap (s = 2), H = 1, ring, net.compression
#   auto  overlap (s = 2), algorithm.period "auto" (a row the config refuses
#         is skipped, saying why); auto8: the same with net.compression int8
# The tether rows run `tether train` on Fashion-MNIST through `switch.sh run`
# (net.security --security, default curve; DDP's gloo is plaintext).
# Columns: images/s of the cluster (the sum over nodes of each node's
# steady-state images_per_s from its metrics file: the first and the last
# records left out, as bench/paper.sh), the ratio to DDP, idle fraction
# (idle_frac_total, mean over nodes: the targets' figure; beside it "steady",
# the mean of the periodic records' idle_frac over the windows images/s
# keeps, without start-up and final drain), test accuracy after --epochs epochs
# (node 0; every node ends with the same parameters). Each figure is the
# median over --seeds (train.seed). --steps K: throughput only, every row
# stops after K steps per node (no accuracy).
# Targets (printed, met or not): at 100 Mbit/s, overlap H = 1 int8 >= 2x
# DDP's images/s with idle <= 5 %; period auto: idle <= 2 % at every rate;
# the accuracy of every compressed row (bf16, int8) within 0.3 points of none.
# --out DIR keeps every run's logs (DIR/<rate>-<row>-<seed>/) and the results
# (DIR/results.jsonl). Ends with one line per rate:
#   RESULT bench=switch rate=... mode=... ddp_ips=... <row>_ips=... <row>_ratio=... <row>_idle=... <row>_idle_steady=... <row>_acc=...
#          target_int8_2x=met|missed|na target_auto_idle=... target_acc=...
# Environment: TETHER_SWITCH_PREFIX (the switch's names, default tether),
# PEERS (the peer scripts, default ../shared/peers), SKIP_BUILD=1.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
RATES="100mbit 1gbit" ROWS="ddp sync none bf16 int8 auto auto8" SEEDS="1 2 3" EPOCHS=1 STEPS=0 DDP_STEPS=100
NODES=4 BATCH=64 LR=0.05 MOMENTUM=0.9 SECURITY=curve OUT=""
usage() { sed -n '8,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --rates) RATES=$2;; --rows) ROWS=$2;; --seeds) SEEDS=$2;; --epochs) EPOCHS=$2;; --steps) STEPS=$2;;
    --ddp-steps) DDP_STEPS=$2;; --nodes) NODES=$2;; --batch) BATCH=$2;; --security) SECURITY=$2;; --out) OUT=$2;;
    *) usage;;
  esac
  shift 2
done
for v in EPOCHS STEPS DDP_STEPS NODES BATCH; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "--${v,,}: expected a whole number, got ${!v}" >&2; exit 2; }
done
if [ "$NODES" -lt 2 ] || [ "$EPOCHS" -lt 1 ] || [ "$BATCH" -lt 1 ] || [ "$DDP_STEPS" -lt 1 ]; then
  echo "--nodes >= 2, --epochs, --batch and --ddp-steps >= 1" >&2; exit 2
fi
if [ -z "$SEEDS" ] || [ -z "$ROWS" ] || [ -z "$RATES" ]; then echo "--seeds, --rows and --rates: give at least one" >&2; exit 2; fi
for row in $ROWS; do
  [ "$row" = ddp ] || [ -n "${SWITCH_ROW_SETS[$row]:-}" ] \
    || { echo "--rows: unknown row $row (ddp ${!SWITCH_ROW_SETS[*]})" >&2; exit 2; }
done
# shellcheck disable=SC2119  # build_tether: no meson options here
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-torch dataset-fashion-mnist; fi
export TETHER=${TETHER:-$BUILD_DIR/tether}
[ -x "$TETHER" ] || { echo "$TETHER not built" >&2; exit 2; }
switch_check || exit 2
if [ -n "$OUT" ]; then mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd); fi

tmp=$(mktemp -d)
cleanup() { switch_down; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
results=$tmp/results.jsonl
: > "$results"
mode="epochs:$EPOCHS"; [ "$STEPS" -gt 0 ] && mode="steps:$STEPS"
switch_bench_header
echo "# $NODES nodes, lenet, batch $BATCH per node, 1 thread per node, SGD lr $LR momentum $MOMENTUM;" \
     "$([ "$STEPS" -gt 0 ] && echo "$STEPS steps per node (throughput only)" || echo "$EPOCHS epoch(s)");" \
     "seeds $SEEDS; rates $RATES; tether net.security $SECURITY"

# The rows the config refuses (e.g. a key not known yet) are skipped.
switch_bench_config "$tmp/check.json" "$NODES" "$BATCH" "$LR" "$MOMENTUM" 1 "$EPOCHS" "$STEPS" "$tmp/check" "$SECURITY"
# shellcheck disable=SC2086  # ROWS is a list of words
mapfile -t run_rows < <(switch_rows_accepted "$tmp/check.json" "$results" $ROWS)

limit=$((300 + 900 * EPOCHS)); [ "$STEPS" -gt 0 ] && limit=$((300 + 4 * STEPS))   # seconds per run
port=$((29500 + RANDOM % 400))   # DDP's rendezvous, a new one per run
# run_row RATE SEED ROW: one run; appends its figures to $results.
run_row() {
  local rate=$1 seed=$2 row=$3 dir=$tmp/$1-$3-$2 base=$tmp/base-$2.json acc="" fm_ips="" summary sets
  mkdir -p "$dir"
  if [ "$row" = ddp ]; then
    port=$((port + 1))
    ddp_on_switch "$NODES" "$([ "$STEPS" -gt 0 ] && echo "$STEPS" || echo "$DDP_STEPS")" 10 "$port" \
      "$dir/ddp_rank" 1 "$BATCH" || return 1
    if [ "$STEPS" -eq 0 ]; then   # accuracy: the same DDP loop on Fashion-MNIST
      port=$((port + 1))
      on_switch "$NODES" "$limit" "$dir/fmnist" env GLOO_SOCKET_IFNAME='{if}' /usr/bin/python3 \
        "$TETHER_ROOT/examples/pytorch_fmnist.py" --backend ddp --config "$base" --node '{i}' --threads 1 \
        --base-port "$port" --out "$dir/fmnist-{i}.json" || return 1
      read -r acc fm_ips < <(python3 - "$dir" "$NODES" <<'PY'
import json, sys
d, n = sys.argv[1], int(sys.argv[2])
res = [json.load(open(f"{d}/fmnist-{i}.json"))["results"][0] for i in range(n)]
print(res[0]["test_acc"], sum(r["images"] for r in res) / max(r["train_s"] for r in res))
PY
)
    fi
    printf '{"rate": "%s", "seed": %s, "row": "ddp", "ips": %s, "idle": null, "acc": %s, "fmnist_ips": %s, "same_hash": true}\n' \
      "$rate" "$seed" "$DDP_IPS" "${acc:-null}" "${fm_ips:-null}" >> "$results"
  else
    mapfile -t sets < <(switch_row_args "$row")
    # In the background and waited for: a signal to this script ends the wait
    # (the EXIT trap's switch_down then stops the nodes).
    timeout -k 10 "$limit" "$SWITCH_SH" run "$base" --set log.dir="$dir" "${sets[@]}" > "$dir.out" 2>&1 &
    if ! wait $!; then echo "run $rate $row seed $seed failed:" >&2; tail -n 20 "$dir.out" >&2; return 1; fi
    summary=$(python3 "$TETHER_ROOT/bench/bench_util.py" summary "$dir" "$NODES") || return 1
    python3 -c "import json, sys; r = json.loads(sys.argv[1]); r.update(rate=sys.argv[2], seed=int(sys.argv[3]), row=sys.argv[4])
if r['missing']: sys.exit(f'{sys.argv[4]}: no final record from nodes {r[\"missing\"]}')
if sys.argv[5] != '0': r['acc'] = None   # --steps: not after the same epochs
print(json.dumps(r))" "$summary" "$rate" "$seed" "$row" "$STEPS" >> "$results" || return 1
  fi
  tail -n 1 "$results" | python3 -c "
import json, sys; r = json.loads(sys.stdin.read())
acc = f\"{r['acc'] * 100:.2f} %\" if r.get('acc') is not None else '-'
idle = f\"{r['idle'] * 100:.1f} %\" if r.get('idle') is not None else '-'
warn = '' if r['same_hash'] else '  (nodes ended with different parameters!)'
print(f\"  {r['rate']:<8} seed {r['seed']}  {r['row']:<5} {r['ips']:8.0f} img/s  idle {idle:>7}  test acc {acc}{warn}\")"
  if [ -n "$OUT" ]; then rm -rf "${OUT:?}/$rate-$row-$seed"; cp -r "$dir" "$OUT/$rate-$row-$seed"; fi
}

for rate in $RATES; do
  switch_up "$NODES" "$rate" || exit 1
  echo "# $rate per port"
  for seed in $SEEDS; do
    switch_bench_config "$tmp/base-$seed.json" "$NODES" "$BATCH" "$LR" "$MOMENTUM" "$seed" "$EPOCHS" "$STEPS" \
      "$tmp/unused" "$SECURITY"
    for row in "${run_rows[@]}"; do run_row "$rate" "$seed" "$row" || exit 1; done
  done
  switch_down
done
[ -z "$OUT" ] || cp "$results" "$OUT/results.jsonl"

labels=(); for row in $ROWS; do labels+=("$row=${SWITCH_ROW_LABEL[$row]:-$row}"); done
python3 - "$results" "$RATES" "$ROWS" "$mode" "$NODES" "$SEEDS" "${labels[@]}" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
rates, rows, mode, nodes, seeds = sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6].split()
label = dict(a.split("=", 1) for a in sys.argv[7:])
skipped = {r["row"] for r in recs if r.get("skipped")}
def med(rate, row, key):
    v = [r[key] for r in recs if not r.get("skipped") and r["rate"] == rate and r["row"] == row and r.get(key) is not None]
    return statistics.median(v) if v else None
fmt = lambda v, f: "na" if v is None else f.format(v)
pct = lambda v, f: "-" if v is None else f.format(v * 100)
print()
print(f"{nodes} nodes, lenet, {mode}, median over seeds {' '.join(seeds)}")
print(f"{'rate':<8} {'row':<22} {'img/s':>8} {'x DDP':>7} {'idle':>7} {'steady':>7} {'test acc':>9}")
for rate in rates:
    ddp = med(rate, "ddp", "ips")
    for row in rows:
        if row in skipped:
            print(f"{rate:<8} {label.get(row, row):<22} skipped (the config refuses it)")
            continue
        ips, idle, acc = med(rate, row, "ips"), med(rate, row, "idle"), med(rate, row, "acc")
        ratio = ips / ddp if ips is not None and ddp else None
        print(f"{rate:<8} {label.get(row, row):<22} {fmt(ips, '{:.0f}'):>8} {fmt(ratio, '{:.2f}x'):>7} "
              f"{pct(idle, '{:.1f} %'):>7} {pct(med(rate, row, 'idle_steady'), '{:.1f} %'):>7} {pct(acc, '{:.2f} %'):>9}")
    fm = med(rate, "ddp", "fmnist_ips")
    if fm is not None:
        print(f"{'':<8} (DDP on Fashion-MNIST, examples/pytorch_fmnist.py: {fm:.0f} img/s over the whole run)")
bad = [r for r in recs if not r.get("skipped") and not r["same_hash"]]
if bad:
    print("WARNING: nodes ended with different parameters in " + ", ".join(f"{r['rate']} {r['row']} seed {r['seed']}" for r in bad))

def verdict(ok):
    return "na" if ok is None else ("met" if ok else "missed")
print()
print("targets:")
for rate in rates:
    ddp = med(rate, "ddp", "ips")
    out = [f"rate={rate}", f"mode={mode}", f"nodes={nodes}", f"seeds={len(seeds)}", f"ddp_ips={fmt(ddp, '{:.0f}')}"]
    for row in rows:
        if row == "ddp":
            continue
        ips, idle, acc = med(rate, row, "ips"), med(rate, row, "idle"), med(rate, row, "acc")
        out += [f"{row}_ips={fmt(ips, '{:.0f}')}", f"{row}_ratio={fmt(ips / ddp if ips is not None and ddp else None, '{:.2f}')}",
                f"{row}_idle={fmt(idle, '{:.4f}')}", f"{row}_idle_steady={fmt(med(rate, row, 'idle_steady'), '{:.4f}')}",
                f"{row}_acc={fmt(None if acc is None else acc * 100, '{:.2f}')}"]
    # overlap H = 1 int8 >= 2x DDP with idle <= 5 % (at 100 Mbit/s)
    t1 = None
    if rate.lower() == "100mbit":
        ips, idle = med(rate, "int8", "ips"), med(rate, "int8", "idle")
        if ips is not None and ddp and idle is not None:
            t1 = ips >= 2 * ddp and idle <= 0.05
            print(f"  {rate}: overlap H=1 int8 >= 2x DDP images/s with idle <= 5 %: {ips / ddp:.2f}x, idle {idle * 100:.1f} % "
                  f"-> {verdict(t1)}")
        else:
            print(f"  {rate}: overlap H=1 int8 >= 2x DDP images/s with idle <= 5 %: not measured (rows ddp and int8 needed)")
    idle = med(rate, "auto", "idle")
    t2 = None if idle is None else idle <= 0.02
    print(f"  {rate}: period auto idle <= 2 %: " +
          (f"{idle * 100:.1f} % -> {verdict(t2)}" if idle is not None else
           "not measured (row auto " + ("skipped: the config refuses it)" if "auto" in skipped else "not run)")))
    none = med(rate, "none", "acc")
    diffs = {c: med(rate, c, "acc") - none for c in ("bf16", "int8") if none is not None and med(rate, c, "acc") is not None}
    t3 = None if not diffs else all(abs(d) * 100 <= 0.3 for d in diffs.values())
    print(f"  {rate}: accuracy of every compressed row within 0.3 points of none: " +
          (", ".join(f"{c} {d * 100:+.2f} points" for c, d in diffs.items()) + f" -> {verdict(t3)}" if diffs else
           "not measured" + (" (--steps: no accuracy)" if mode.startswith("steps") else " (rows none, bf16/int8 needed)")))
    out += [f"target_int8_2x={verdict(t1) if rate.lower() == '100mbit' else 'na'}", f"target_auto_idle={verdict(t2)}",
            f"target_acc={verdict(t3)}"]
    print("RESULT bench=switch " + " ".join(out))
PY
