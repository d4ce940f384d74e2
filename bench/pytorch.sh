#!/usr/bin/env bash
# A PyTorch training loop averaged by tether.Averager against PyTorch DDP on
# the emulated switch (scripts/switch.sh: N network namespaces on one bridge,
# every port shaped to RATE with tc tbf; needs root): images/s and idle time
# with the same N, model (the peers' LeNet), batch per node, threads and
# optimizer (SGD lr 0.05, momentum 0.9) on every row.
#
#   bench/pytorch.sh [--rates "100mbit 1gbit"] [--rows "ddp none int8 auto auto8"] [--steps 200]
#                    [--runs 1] [--nodes 4] [--batch 64] [--threads 1] [--security curve|none]
#                    [--out DIR]
#
# Rows (--rows picks and orders them; the tether rows are data, in
# scripts/common.sh, SWITCH_ROW_SETS, shared with bench/switch.sh):
#   ddp   PyTorch DDP (gloo), ../shared/peers/ddp_rank.py, one rank per
#         namespace: --steps timed steps after 10 warm-up steps (random data)
#   none, int8   examples/pytorch_fmnist.py --config FILE --node i, one
#         process per namespace (Fashion-MNIST, the same loop as DDP's plus
#         avg.step()), tether.Averager overlap (s = 2), H = 1, ring,
#         net.compression none / int8; every node stops after --steps steps
#   auto  the same with algorithm.period "auto" (a row the config refuses is
#         skipped, saying why); auto8: the same with net.compression int8
#   (sync and bf16, also defined there, may be named too.)
# Every row runs --threads threads of torch and of OpenBLAS (torch's BLAS on
# Debian, which torch.set_num_threads does not reach: OPENBLAS_NUM_THREADS).
# The Averager's links use net.security --security (default curve: keys made
# per run by `tether keygen`); DDP's gloo is plaintext.
# Columns: images/s of the cluster (tether rows: the sum over nodes of each
# node's steady-state images_per_s from its metrics file, the first and the
# last records left out, as bench/paper.sh; DDP: ddp_rank.py's total over its
# timed steps), the ratio to DDP, idle fraction (idle_frac_total, mean over
# nodes: the targets' figure; beside it "steady", the mean of the periodic
# records' idle_frac over the windows images/s keeps; DDP has no such figure:
# its wait is inside backward()). Median over
# --runs runs (rows interleaved within a run).
# Targets (printed per tether row, met or not): >= DDP's images/s at 1 Gbit/s,
# >= 1.8x at 100 Mbit/s, idle <= 5 %.
# --out DIR keeps every run's logs (DIR/<rate>-<row>-<run>/) and the results
# (DIR/results.jsonl). Ends with one line per rate:
#   RESULT bench=pytorch rate=... steps=... runs=... ddp_ips=... <row>_ips=... <row>_ratio=... <row>_idle=... <row>_idle_steady=...
#          target_<row>=met|missed ...
# Environment: TETHER_SWITCH_PREFIX (the switch's names, default tether),
# PEERS (the peer scripts, default ../shared/peers), SKIP_BUILD=1.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
source "$TETHER_ROOT/scripts/wait_nodes.sh"   # ensure_keys
RATES="100mbit 1gbit" ROWS="ddp none int8 auto auto8" STEPS=200 RUNS=1 NODES=4 BATCH=64 THREADS=1 SECURITY=curve OUT=""
usage() { sed -n '8,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || usage
  case "$1" in
    --rates) RATES=$2;; --rows) ROWS=$2;; --steps) STEPS=$2;; --runs) RUNS=$2;; --nodes) NODES=$2;;
    --batch) BATCH=$2;; --threads) THREADS=$2;; --security) SECURITY=$2;; --out) OUT=$2;;
    *) usage;;
  esac
  shift 2
done
for v in STEPS RUNS NODES BATCH THREADS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "--${v,,}: expected a whole number, got ${!v}" >&2; exit 2; }
done
if [ "$NODES" -lt 2 ] || [ "$STEPS" -lt 60 ] || [ "$RUNS" -lt 1 ] || [ "$BATCH" -lt 1 ] || [ "$THREADS" -lt 1 ]; then
  echo "--nodes >= 2, --steps >= 60 (a record every 20 steps, the first and last left out), --runs, --batch, --threads >= 1" >&2
  exit 2
fi
if [ -z "$ROWS" ] || [ -z "$RATES" ]; then echo "--rows and --rates: give at least one" >&2; exit 2; fi
for row in $ROWS; do
  [ "$row" = ddp ] || [ -n "${SWITCH_ROW_SETS[$row]:-}" ] \
    || { echo "--rows: unknown row $row (ddp ${!SWITCH_ROW_SETS[*]})" >&2; exit 2; }
done
# shellcheck disable=SC2119  # build_tether: no meson options here
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-torch dataset-fashion-mnist; fi
export TETHER=${TETHER:-$BUILD_DIR/tether}
[ -x "$TETHER" ] || { echo "$TETHER not built" >&2; exit 2; }
PYTHONPATH=$BUILD_DIR/python /usr/bin/python3 -c 'import tether' \
  || { echo "the Python module is not built at $BUILD_DIR/python (pybind11-dev; meson -Dpython=enabled)" >&2; exit 2; }
switch_check || exit 2
if [ -n "$OUT" ]; then mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd); fi

tmp=$(mktemp -d)
cleanup() { switch_down; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
results=$tmp/results.jsonl
: > "$results"
switch_bench_header
echo "# $NODES nodes, LeNet, batch $BATCH per node, $THREADS torch thread(s) per node, SGD lr 0.05 momentum 0.9;" \
     "$STEPS steps per node; $RUNS run(s); rates $RATES; tether net.security $SECURITY"

# The config: the benchmarks' base (scripts/common.sh), every node stopping
# after --steps steps. The rows the config refuses are skipped.
switch_bench_config "$tmp/base.json" "$NODES" "$BATCH" 0.05 0.9 1 1 "$STEPS" "$tmp/unused" "$SECURITY"
# shellcheck disable=SC2086  # ROWS is a list of words
mapfile -t run_rows < <(switch_rows_accepted "$tmp/base.json" "$results" $ROWS)

limit=$((300 + 4 * STEPS))   # seconds per run
port=$((29500 + RANDOM % 400))   # DDP's rendezvous, a new one per run
# run_row RATE RUN ROW: one run; appends its figures to $results.
run_row() {
  local rate=$1 run=$2 row=$3 dir=$tmp/$1-$3-$2 summary sets
  mkdir -p "$dir"
  if [ "$row" = ddp ]; then
    port=$((port + 1))
    ddp_on_switch "$NODES" "$STEPS" 10 "$port" "$dir/ddp_rank" "$THREADS" "$BATCH" || return 1
    printf '{"rate": "%s", "run": %s, "row": "ddp", "ips": %s, "idle": null, "same_hash": true}\n' \
      "$rate" "$run" "$DDP_IPS" >> "$results"
  else
    mapfile -t sets < <(switch_row_args "$row")
    "$TETHER" config "$tmp/base.json" --set log.dir="$dir" "${sets[@]}" > "$dir.json" || return 1
    ensure_keys "$dir.json" "$dir.keys" 2> "$dir.keys.log" || { cat "$dir.keys.log" >&2; return 1; }
    on_switch "$NODES" "$limit" "$dir/py" env PYTHONPATH="$BUILD_DIR/python" OPENBLAS_NUM_THREADS="$THREADS" /usr/bin/python3 \
      "$TETHER_ROOT/examples/pytorch_fmnist.py" --config "$KEYED_CONFIG" --node '{i}' --threads "$THREADS" \
      --test-limit 1000 || return 1
    summary=$(python3 "$TETHER_ROOT/bench/bench_util.py" summary "$dir" "$NODES") || return 1
    python3 -c "import json, sys; r = json.loads(sys.argv[1]); r.update(rate=sys.argv[2], run=int(sys.argv[3]), row=sys.argv[4])
if r['missing']: sys.exit(f'{sys.argv[4]}: no final record from nodes {r[\"missing\"]}')
print(json.dumps(r))" "$summary" "$rate" "$run" "$row" >> "$results" || return 1
  fi
  tail -n 1 "$results" | python3 -c "
import json, sys; r = json.loads(sys.stdin.read())
idle = f\"{r['idle'] * 100:.1f} %\" if r.get('idle') is not None else '-'
warn = '' if r['same_hash'] else '  (nodes ended with different parameters!)'
print(f\"  {r['rate']:<8} run {r['run']}  {r['row']:<5} {r['ips']:8.0f} img/s  idle {idle:>7}{warn}\")"
  if [ -n "$OUT" ]; then rm -rf "${OUT:?}/$rate-$row-$run"; cp -r "$dir" "$OUT/$rate-$row-$run"; fi
}

for rate in $RATES; do
  switch_up "$NODES" "$rate" || exit 1
  echo "# $rate per port"
  for ((run = 1; run <= RUNS; run++)); do
    for row in "${run_rows[@]}"; do run_row "$rate" "$run" "$row" || exit 1; done
  done
  switch_down
done
[ -z "$OUT" ] || cp "$results" "$OUT/results.jsonl"

labels=(); for row in $ROWS; do labels+=("$row=${SWITCH_ROW_LABEL[$row]:-$row}"); done
python3 - "$results" "$RATES" "$ROWS" "$STEPS" "$RUNS" "$NODES" "${labels[@]}" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
rates, rows, steps, runs, nodes = sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6]
label = dict(a.split("=", 1) for a in sys.argv[7:])
label.update({r: "Averager " + l for r, l in label.items() if r != "ddp"})
skipped = {r["row"] for r in recs if r.get("skipped")}
def med(rate, row, key):
    v = [r[key] for r in recs if not r.get("skipped") and r["rate"] == rate and r["row"] == row and r.get(key) is not None]
    return statistics.median(v) if v else None
fmt = lambda v, f: "na" if v is None else f.format(v)
pct = lambda v: "-" if v is None else f"{v * 100:.1f} %"
need = lambda rate: {"100mbit": 1.8, "1gbit": 1.0}.get(rate.lower())   # the targets' ratios to DDP
print()
print(f"{nodes} nodes, LeNet, {steps} steps per node, median of {runs} run(s)")
print(f"{'rate':<8} {'row':<32} {'img/s':>8} {'x DDP':>7} {'idle':>7} {'steady':>7}  target")
for rate in rates:
    ddp, out = med(rate, "ddp", "ips"), [f"rate={rate}", f"steps={steps}", f"runs={runs}", f"nodes={nodes}"]
    out.append(f"ddp_ips={fmt(ddp, '{:.0f}')}")
    for row in rows:
        if row in skipped:
            print(f"{rate:<8} {label.get(row, row):<32} skipped (the config refuses it)")
            out += [f"{row}_ips=na", f"{row}_ratio=na", f"{row}_idle=na", f"{row}_idle_steady=na", f"target_{row}=na"]
            continue
        ips, idle = med(rate, row, "ips"), med(rate, row, "idle")
        ratio = ips / ddp if ips is not None and ddp else None
        target = ""
        if row != "ddp":
            ok = None if ratio is None or idle is None or need(rate) is None else ratio >= need(rate) and idle <= 0.05
            verdict = "na" if ok is None else ("met" if ok else "missed")
            target = f">= {need(rate)}x DDP, idle <= 5 %: {verdict}" if need(rate) else "no target at this rate"
            out += [f"{row}_ips={fmt(ips, '{:.0f}')}", f"{row}_ratio={fmt(ratio, '{:.2f}')}",
                    f"{row}_idle={fmt(idle, '{:.4f}')}", f"{row}_idle_steady={fmt(med(rate, row, 'idle_steady'), '{:.4f}')}",
                    f"target_{row}={verdict}"]
        print(f"{rate:<8} {label.get(row, row):<32} {fmt(ips, '{:.0f}'):>8} {fmt(ratio, '{:.2f}x'):>7} "
              f"{pct(idle):>7} {pct(med(rate, row, 'idle_steady')):>7}  {target}")
    print("RESULT bench=pytorch " + " ".join(out))
bad = [r for r in recs if not r.get("skipped") and not r["same_hash"]]
if bad:
    print("WARNING: nodes ended with different parameters in " + ", ".join(f"{r['rate']} {r['row']} run {r['run']}" for r in bad))
PY
