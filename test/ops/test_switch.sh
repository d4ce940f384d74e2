#!/usr/bin/env bash
# scripts/switch.sh for real: 3 namespaces on a bridge at 100mbit.
#   - bad input and a failure half-way through `up` leave nothing behind
#   - every namespace pings every other
#   - a timed TCP transfer (python3 sockets) runs at 100 Mbit/s ± 30 %, both ways
#   - a tiny 3-node training via `switch.sh run` ends with one params_hash
#   - `down` leaves no namespace, bridge, veth or state file; twice is fine
# Skips (exit 0, saying why) where network namespaces cannot be made.
# Uses the default names (tether-ns0.., tether-br0) unless a switch is already
# up, then its own prefix so that it leaves that one alone.
set -uo pipefail
SRC=${TETHER_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TETHER_BUILD_ROOT:-$SRC/build}
export TETHER=$BUILD/tether
SWITCH=$SRC/scripts/switch.sh
RATE_MBIT=100

CASES=0 PASSED=0 FAILED=0 SKIPPED=0
summary() { echo "[doctest] test cases: $CASES | $PASSED passed | $FAILED failed | $SKIPPED skipped"; }
ok() { CASES=$((CASES + 1)); PASSED=$((PASSED + 1)); echo "ok    $1"; }
bad() { CASES=$((CASES + 1)); FAILED=$((FAILED + 1)); echo "FAIL  $1"; }
check() {   # check NAME CMD...: passes when CMD succeeds; its output is shown on failure
  local name=$1; shift
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -eq 0 ]; then ok "$name"; else bad "$name"; echo "      (exit $rc)"; printf '%s\n' "$out" | tail -n 25 | sed 's/^/      | /'; fi
  return $rc
}
skip_all() { echo "SKIP  $1"; CASES=1; SKIPPED=1; summary; exit 0; }

command -v ip >/dev/null && command -v tc >/dev/null || skip_all "iproute2 (ip, tc) is not installed"
if ! ip netns add "tswprobe$$" 2>/dev/null; then
  skip_all "cannot create network namespaces here (needs root or CAP_NET_ADMIN)"
fi
ip netns del "tswprobe$$"
[ -x "$TETHER" ] || { bad "tether binary at $TETHER"; summary; exit 1; }

# The default names when no one else uses them (a lock keeps two runs of this
# test apart), else names of its own.
export TETHER_SWITCH_PREFIX=tether
exec 9> /tmp/tether-switch-test.lock
if ! flock -n 9 || ip link show tether-br0 >/dev/null 2>&1 || ip netns list | grep -q '^tether-ns'; then
  TETHER_SWITCH_PREFIX=t$(( $$ % 1000000 ))
  echo "note: a tether switch is up or being tested; this test uses the prefix $TETHER_SWITCH_PREFIX"
fi
P=$TETHER_SWITCH_PREFIX
T=$(mktemp -d /tmp/tether-switch-test.XXXXXX) || exit 1
cleanup() {
  [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null
  [ "${MADE:-0}" = 1 ] && timeout 60 "$SWITCH" down >/dev/null 2>&1
  rm -rf "$T"
}
trap 'cleanup; summary' EXIT
trap 'exit 1' INT TERM

leftovers() {   # prints anything of ours still present
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-ns[0-9]+$"
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$P-(br0|h[0-9]+)$"
  ls /run/$P-switch.state /tmp/$P-switch.state 2>/dev/null
}
nothing_left() { local l; l=$(leftovers); [ -z "$l" ] || { echo "left: $l"; return 1; }; }

# --- bad input, failure half-way ------------------------------------------------
bad_rate() { timeout 30 "$SWITCH" up 3 fast; [ $? -eq 2 ] && nothing_left; }
check "up with a bad RATE: exit 2, nothing made" bad_rate
half_way() {
  # tc refuses this latency after the bridge, ns0 and its veth exist: up must undo them
  SWITCH_LATENCY=bogus timeout 60 "$SWITCH" up 3 100mbit; local rc=$?
  [ $rc -ne 0 ] && nothing_left
}
check "up failing half-way (tc error) undoes what it made" half_way

# --- up ----------------------------------------------------------------------------
check "up 3 ${RATE_MBIT}mbit" timeout 60 "$SWITCH" up 3 ${RATE_MBIT}mbit || exit 1
MADE=1   # from here on, the EXIT trap takes it down
check "status: up, 3 ports" bash -c "timeout 30 '$SWITCH' status | tee /dev/stderr | grep -q '3 port(s) at ${RATE_MBIT}mbit'"
check "up again while up: refused" bash -c "! timeout 30 '$SWITCH' up 3 ${RATE_MBIT}mbit"
shaped() {   # both ends of every port carry tbf at the rate; addresses in place
  local i
  for i in 0 1 2; do
    tc qdisc show dev "$P-h$i" | tee /dev/stderr | grep -q "tbf .*rate ${RATE_MBIT}Mbit" || return 1
    tc -n "$P-ns$i" qdisc show dev "$P-n$i" | tee /dev/stderr | grep -q "tbf .*rate ${RATE_MBIT}Mbit" || return 1
    ip -n "$P-ns$i" -o -4 addr show dev "$P-n$i" | grep -q "10.77.0.$((i + 1))/24" || return 1
    ip -o link show "$P-h$i" | grep -q "master $P-br0" || return 1
  done
}
check "every port: tbf ${RATE_MBIT}Mbit on both veth ends, address 10.77.0.i+1, on the bridge" shaped

# --- connectivity --------------------------------------------------------------------
if ! command -v ping >/dev/null; then
  (source "$SRC/scripts/common.sh" && ensure_packages iputils-ping) >/dev/null 2>&1
fi
pings() {
  local i j
  for i in 0 1 2; do for j in 0 1 2; do
    [ $i = $j ] && continue
    if command -v ping >/dev/null; then
      timeout 10 ip netns exec "$P-ns$i" ping -c 1 -W 3 "10.77.0.$((j + 1))" >/dev/null || { echo "ns$i -> 10.77.0.$((j + 1)): no reply"; return 1; }
    else   # no ping here: a TCP connection attempt answered by RST also proves the path
      timeout 10 ip netns exec "$P-ns$i" python3 -c "
import socket, sys
s = socket.socket(); s.settimeout(3)
try: s.connect(('10.77.0.$((j + 1))', 9))
except ConnectionRefusedError: sys.exit(0)
except OSError as e: sys.exit(str(e))" || { echo "ns$i -> 10.77.0.$((j + 1)): no answer"; return 1; }
    fi
  done; done
  echo "6 paths answer"
}
check "every namespace reaches every other (ping)" pings

# --- throughput ----------------------------------------------------------------------
cat > "$T/tput.py" <<'EOF'
# server ADDR PORT: receives one connection, prints Mbit/s from first to last byte
# client ADDR PORT SECONDS: sends as fast as it can for SECONDS
import socket, sys, time
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(1); s.settimeout(30)
    c, _ = s.accept(); c.settimeout(30)
    total, t_first, t_last = 0, None, None
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        now = time.monotonic()
        if t_first is None:
            t_first = now          # bytes of the first read are not timed
        else:
            total += len(b)
        t_last = now
    print(f"{total * 8 / (t_last - t_first) / 1e6:.1f}")
else:
    deadline = time.monotonic() + 10
    while True:   # the server may not listen yet
        try:
            c = socket.create_connection((addr, port), timeout=5); break
        except ConnectionRefusedError:
            if time.monotonic() > deadline: raise
            time.sleep(0.1)
    buf = b"\0" * (1 << 16); end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:
        c.sendall(buf)
    c.close()
EOF
transfer() {   # transfer FROM TO: Mbit/s measured at the receiver, within ±30 % of the rate
  local from=$1 to=$2 mbit
  timeout 40 ip netns exec "$P-ns$to" python3 "$T/tput.py" server "10.77.0.$((to + 1))" 5201 > "$T/tput-$from-$to" &
  SRV_PID=$!
  timeout 30 ip netns exec "$P-ns$from" python3 "$T/tput.py" client "10.77.0.$((to + 1))" 5201 3 || return 1
  wait "$SRV_PID"; SRV_PID=""
  mbit=$(cat "$T/tput-$from-$to")
  echo "ns$from -> ns$to: $mbit Mbit/s (rate ${RATE_MBIT}mbit)"
  python3 -c "import sys; m = float(sys.argv[1]); sys.exit(0 if 0.7 * $RATE_MBIT <= m <= 1.3 * $RATE_MBIT else 1)" "$mbit"
}
for pair in "0 1" "2 0"; do
  set -- $pair
  out=$(transfer "$1" "$2" 2>&1); rc=$?
  if [ $rc -eq 0 ]; then ok "throughput ns$1 -> ns$2 within ±30% of ${RATE_MBIT} Mbit/s: $(tail -n 1 <<< "$out")"
  else bad "throughput ns$1 -> ns$2 within ±30% of ${RATE_MBIT} Mbit/s"; sed 's/^/      | /' <<< "$out"; fi
done

# --- tether over the switch -------------------------------------------------------------
python3 - "$T" <<'EOF'
import json, sys
t = sys.argv[1]
peers = [{"id": i, "host": "127.0.0.1", "port": 5550 + i} for i in range(3)]
base = {
    "device": "cpu", "cluster": {"peers": peers},
    "model": {"name": "mlp", "hidden": 16},
    "data": {"name": "synthetic", "synthetic_train": 960, "synthetic_test": 64, "batch_size": 16},
    "optimizer": {"lr": 0.05, "momentum": 0.0},
    "algorithm": {"name": "overlap", "staleness": 1, "period": 1, "mixer": "ring"},
    "train": {"epochs": 1, "seed": 5, "threads": 1},
    "log": {"dir": f"{t}/log", "every_steps": 5, "progress": False},
    "net": {"connect_timeout_ms": 30000},
}
json.dump(base, open(f"{t}/sw3.json", "w"), indent=1)
base["cluster"]["peers"].append({"id": 3, "host": "127.0.0.1", "port": 5553})
json.dump(base, open(f"{t}/sw-too-many.json", "w"), indent=1)
EOF
sent_bytes() { tc -n "$P-ns$1" -s qdisc show dev "$P-n$1" | awk '/Sent/ {print $2; exit}'; }
SENT_BEFORE=($(sent_bytes 0) $(sent_bytes 1) $(sent_bytes 2))
t0=$SECONDS
tiny_run() {
  timeout 300 "$SWITCH" run "$T/sw3.json" || return 1
  python3 "$SRC/test/ops/same_hash.py" "$T/log" 3
}
check "run: 3 nodes in the namespaces train and end with one params_hash" tiny_run
echo "      (run: $((SECONDS - t0)) s)"
traffic() {   # every node's bytes went out through its shaped port (> 100 kB each)
  local i d out; out=$(timeout 30 "$SWITCH" status); echo "$out"
  for i in 0 1 2; do
    d=$(( $(sent_bytes $i) - ${SENT_BEFORE[$i]} )); echo "node $i sent $d B during the run"
    [ $d -gt 100000 ] || return 1
    grep -q "node $i: $P-ns$i 10.77.0.$((i + 1))/24" <<< "$out" || return 1
  done
}
check "the run's traffic went through every node's shaped port (tc counters, status)" traffic
too_many() {
  local out; out=$(timeout 30 "$SWITCH" run "$T/sw-too-many.json" 2>&1); local rc=$?
  echo "$out"; [ $rc -eq 2 ] && grep -q "cluster.peers\[3\].id = 3, but the switch has 3 port(s)" <<< "$out"
}
check "run: a peer id beyond the switch's ports is refused (exit 2, says why)" too_many
bad_config() {   # refused by tether config with train's own message, before any node starts
  local out want; out=$(timeout 30 "$SWITCH" run "$T/sw3.json" --set cluster.peers.1.port=0 2>&1); local rc=$?
  want=$("$TETHER" train "$T/sw3.json" --set cluster.peers.1.port=0 2>&1)
  echo "$out"; [ $rc -eq 2 ] && [ "$out" = "$want" ]
}
check "run: a bad config or --set is refused with train's error (exit 2), no node started" bad_config

# --- down -------------------------------------------------------------------------------
check "down" timeout 60 "$SWITCH" down
check "nothing left: no namespace, bridge, veth or state file" nothing_left
check "down again (idempotent): exit 0" timeout 60 "$SWITCH" down
check "status after down: says down, exit non-zero" bash -c "out=\$(timeout 30 '$SWITCH' status); rc=\$?; echo \"\$out\"; [ \$rc -ne 0 ] && grep -q 'switch is down' <<< \"\$out\""

[ $FAILED -eq 0 ]
