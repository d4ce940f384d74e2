#!/usr/bin/env bash
# Hostile load: 4 nodes train on loopback (lenet-sized synthetic steps, so
# the machine's cores measure the runtime, not compute) while a stranger
# sends node 0 about 10^6 hostile messages (bench/net/hostile_client), for
# net.security "curve" and "none", each against a clean run of the same
# config measured in the same script:
#   curve: raw TCP connections with no key (a NULL greeting, then messages),
#          CURVE clients with a wrong server key, and valid keys not listed;
#   none:  frames of every kind of the hostile-input test (bad magic ... a
#          hello claiming peer 1) on one plaintext connection.
# Checks: every node ends with the same params_hash; node 0 applied nothing
# (curve: no frame rejected, the handshakes refused counted; none: every
# hostile frame counted as rejected); reports the nodes' resident memory at
# the start of the attack and its peak during it (growth), and throughput
# (mean images/s over the nodes) against the clean run: target >= 0.90.
# Ends with: RESULT mode=... sent=... rejected=... handshakes_failed=...
#   rss_start_mb=... rss_peak_mb=... ips_clean=... ips_attacked=... ratio=... ok=0|1 (one line per mode)
#   bench/hostile.sh [--count 1000000] [--steps 400] [--step-ms 50]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
COUNT=1000000 STEPS=400 STEP_MS=50
while [ $# -gt 0 ]; do
  case "$1" in
    --count) COUNT=$2; shift 2;; --steps) STEPS=$2; shift 2;; --step-ms) STEP_MS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
[ "${SKIP_BUILD:-0}" = 1 ] || build_tether
export TETHER=${TETHER:-$BUILD_DIR/tether}
ninja -C "$BUILD_DIR" bench/net/hostile_client >/dev/null
# The stranger runs at nice 19: on one machine it shares the nodes' cores,
# and what its own CPU costs is not what the nodes spend on it.
CLIENT="nice -n 19 $BUILD_DIR/bench/net/hostile_client"
tmp=$(mktemp -d)
BG=""
cleanup() { [ -n "$BG" ] && kill -TERM "$BG" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$TETHER_ROOT" rev-parse --short HEAD 2>/dev/null)"

base=$((20000 + RANDOM % 10000))
make_config() {   # make_config FILE LOGDIR
  python3 - "$1" "$2" "$base" "$STEPS" "$STEP_MS" <<'PY'
import json, sys
f, logdir, base, steps, step_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
json.dump({
    "model": {"name": "lenet"},
    "data": {"name": "synthetic", "batch_size": 64, "synthetic_train": 64 * 4 * steps, "synthetic_test": 64},
    "train": {"seed": 1, "threads": 1, "compute": "synthetic", "synthetic_step_ms": step_ms, "eval_every_epochs": 0},
    "algorithm": {"name": "overlap", "staleness": 2, "period": 1},
    "log": {"dir": logdir, "every_steps": 20, "progress": False},
    "net": {"connect_timeout_ms": 30000, "peer_timeout_ms": 10000},
    "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": base + i} for i in range(4)]},
}, open(f, "w"), indent=1)
PY
}
summary() {   # summary LOGDIR: "ips rejected handshakes_failed" of the run; fails unless one params_hash
  python3 - "$1" <<'PY'
import glob, json, sys
ips, hashes, rej, hs = [], set(), 0, 0
for f in sorted(glob.glob(sys.argv[1] + "/node-*.jsonl")):
    recs = [json.loads(l) for l in open(f)]
    steady = [r["images_per_s"] for r in recs if "images_per_s" in r and "event" not in r][1:]
    fin = [r for r in recs if r.get("event") == "final"]
    hashes.update(r["params_hash"] for r in fin)
    ips.append(sum(steady) / len(steady))
    if f.endswith("node-0.jsonl") and fin:
        rej, hs = fin[-1].get("msgs_rejected", 0), fin[-1].get("handshakes_failed", 0)
        print("node 0 refused:", json.dumps(fin[-1].get("handshake_failed", {})),
              "rejected by reason: see its log", file=sys.stderr)
if len(ips) != 4 or len(hashes) != 1:
    sys.exit(f"run incomplete: {len(ips)} nodes, params_hash values {hashes}")
print(f"{sum(ips) / len(ips):.1f} {rej} {hs}")
PY
}
rss_mb() {   # summed VmRSS (MB) of this script's tether nodes
  local total=0 p kb
  for p in $(pgrep -f -- "train $tmp/" 2>/dev/null); do
    kb=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$p/status" 2>/dev/null)
    total=$((total + ${kb:-0}))
  done
  echo $((total / 1024))
}

for mode in curve none; do
  make_config "$tmp/clean-$mode.json" "$tmp/clean-$mode"
  make_config "$tmp/attack-$mode.json" "$tmp/attack-$mode"
  log "$mode: clean run"
  "$TETHER_ROOT/scripts/local-cluster.sh" "$tmp/clean-$mode.json" --set net.security=$mode > "$tmp/clean-$mode.out" 2>&1 \
    || { tail -n 20 "$tmp/clean-$mode.out"; exit 1; }
  read -r ips_clean _ _ <<< "$(summary "$tmp/clean-$mode")" || exit 1
  log "$mode: attacked run"
  "$TETHER_ROOT/scripts/local-cluster.sh" "$tmp/attack-$mode.json" --set net.security=$mode > "$tmp/attack-$mode.out" 2>&1 &
  BG=$!
  for i in $(seq 300); do grep -qs images_per_s "$tmp/attack-$mode/node-0.jsonl" && break; sleep 0.1; done
  rss_start=$(rss_mb); rss_peak=$rss_start
  if [ $mode = curve ]; then
    key=$(sed -n 1p "$tmp/attack-$mode/keys/node-0.pub")
    ( $CLIENT --port $base --mode nokey --count $((COUNT - 4000))
      $CLIENT --port $base --mode wrongkey --count 2000
      $CLIENT --port $base --mode wrongkey --count 2000 --server-key "$key" ) > "$tmp/client.out" 2>&1 &
  else
    $CLIENT --port $base --mode frames --count "$COUNT" > "$tmp/client.out" 2>&1 &
  fi
  cpid=$!
  while kill -0 $cpid 2>/dev/null; do r=$(rss_mb); [ "$r" -gt "$rss_peak" ] && rss_peak=$r; sleep 0.2; done
  wait $cpid
  # every message must have met a training node: a run that ended first
  # measured nothing of the attack's tail
  kill -0 $BG 2>/dev/null || { echo "the run ended before the stranger finished: raise --steps" >&2; exit 1; }
  sent=$(python3 -c "import re, sys; print(sum(int(x) for x in re.findall(r'sent=(\d+)', open(sys.argv[1]).read())))" "$tmp/client.out")
  sed 's/^/  client: /' "$tmp/client.out"
  wait $BG || { BG=""; tail -n 20 "$tmp/attack-$mode.out"; exit 1; }
  BG=""
  read -r ips_att rej hs <<< "$(summary "$tmp/attack-$mode")" || exit 1
  ratio=$(python3 -c "print(f'{$ips_att / $ips_clean:.3f}')")
  # curve: no stranger's frame reached validation, the handshakes were refused
  # (a client that gives up first counts as "protocol")
  if [ $mode = curve ]; then applied_ok=$([ "$rej" = 0 ] && [ "$hs" -gt 0 ] && echo 1 || echo 0)
  else applied_ok=$([ "$rej" = "$sent" ] && echo 1 || echo 0); fi
  ok=$(python3 -c "print(int($ratio >= 0.9 and $applied_ok == 1))")
  echo "RESULT mode=$mode sent=$sent rejected=$rej handshakes_failed=$hs rss_start_mb=$rss_start rss_peak_mb=$rss_peak ips_clean=$ips_clean ips_attacked=$ips_att ratio=$ratio ok=$ok"
done
