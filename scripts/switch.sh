#!/usr/bin/env bash
# An emulated switch on one Linux machine: N network namespaces on one bridge,
# every port rate-shaped in both directions, and tether nodes run inside them.
#
#   scripts/switch.sh up N RATE        # e.g. up 4 1gbit, up 3 100mbit
#   scripts/switch.sh run CONFIG [tether args, e.g. --set train.epochs=2]
#   scripts/switch.sh status
#   scripts/switch.sh down             # idempotent: removes everything `up` made
#
# `up` makes namespaces tether-ns0..tether-ns<N-1>, a bridge tether-br0 (no
# address: the host itself is not on the switch), and per node a veth pair
# tether-h<i> (bridge side) <-> tether-n<i> (in tether-ns<i>, address
# 10.77.0.<i+1>/24). Both ends get a root `tc qdisc tbf rate RATE`: the
# namespace end shapes what node i sends, the bridge end what it receives, so
# each port is a full-duplex link of RATE as on a switch. RATE is tc's syntax
# (kbit, mbit, gbit; bps = bytes/s). Bridged traffic bypasses the host's
# iptables (nf_call_iptables 0 on this bridge only). The state (N, RATE) is
# kept in /run/tether-switch.state (or /tmp when /run is not writable). If
# `up` fails half-way it removes what it made.
#
# `run` reads CONFIG through `tether config` (validated as `tether train`
# would, errors alike, every --set applied) and writes the resolved copy with
# cluster.peers hosts set to the namespace addresses (peer id i ->
# 10.77.0.<i+1>, ports kept); it starts node i inside
# tether-ns<i> (`ip netns exec tether-ns<i> tether train COPY --node i`), each
# output line prefixed "[node i]". Ctrl-C/SIGTERM is forwarded to every node
# (they write a checkpoint and exit 0); the exit status is non-zero, naming
# them, if any node failed. Relative paths in the config (log.dir, data.path)
# resolve against the current directory as usual.
#
# `down` stops processes left inside the namespaces, deletes the namespaces
# (and with them the veth pairs), the bridge and the state file.
#
# Needs root or CAP_NET_ADMIN and iproute2 (ip, tc).
# Environment (this script's options): TETHER (binary, default build/tether),
# TETHER_SWITCH_PREFIX (names: default "tether" -> tether-ns0, tether-br0;
# at most 7 characters), SWITCH_BURST (tbf burst, default RATE x 4 ms, at
# least 64kb), SWITCH_LATENCY (tbf queue latency, default 50ms).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/wait_nodes.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TETHER=${TETHER:-$ROOT/build/tether}
P=${TETHER_SWITCH_PREFIX:-tether}
BR=$P-br0
SUBNET=10.77.0
LATENCY=${SWITCH_LATENCY:-50ms}
if [ -d /run ] && [ -w /run ]; then STATE=/run/$P-switch.state; else STATE=/tmp/$P-switch.state; fi

die() { echo "switch.sh: $*" >&2; exit 2; }
say() { echo "[switch] $*" >&2; }
usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

[[ $P =~ ^[a-z][a-z0-9]{0,6}$ ]] || die "TETHER_SWITCH_PREFIX: expected 1-7 lower-case letters/digits, got \"$P\""
command -v ip >/dev/null && command -v tc >/dev/null || die "ip/tc not found (apt-get install iproute2)"

# Our namespaces, by name: <prefix>-ns<digits>.
our_namespaces() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-ns[0-9]+\$" | sort -V; }
# Our links in the host namespace: the bridge and bridge-side veths.
our_links() { ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^($P-br0|$P-h[0-9]+)\$"; }

# rate_bytes RATE: tc rate in bytes per second (tc's units).
rate_bytes() {
  local r=${1,,}
  [[ $r =~ ^([0-9]+(\.[0-9]+)?)([kmgt]?)(bit|bps)$ ]] || return 1
  awk -v v="${BASH_REMATCH[1]}" -v p="${BASH_REMATCH[3]}" -v u="${BASH_REMATCH[4]}" 'BEGIN {
    x = v * (p == "k" ? 1e3 : p == "m" ? 1e6 : p == "g" ? 1e9 : p == "t" ? 1e12 : 1)
    printf "%.0f\n", int(u == "bit" ? x / 8 : x) }'
}

do_down() {
  local ns pid found=0 l t0
  for ns in $(our_namespaces); do
    found=1
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null; done
    t0=$SECONDS
    while [ -n "$(ip netns pids "$ns" 2>/dev/null)" ] && [ $((SECONDS - t0)) -lt 5 ]; do sleep 0.1; done
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || echo "switch.sh: cannot delete namespace $ns" >&2
  done
  # Deleting a namespace deletes its veth ends and their peers; what is left
  # (a bridge, a veth whose namespace was never made) goes now.
  for l in $(our_links); do found=1; ip link del "$l" 2>/dev/null; done
  t0=$SECONDS
  while { [ -n "$(our_links)" ] || [ -n "$(our_namespaces)" ]; } && [ $((SECONDS - t0)) -lt 10 ]; do sleep 0.1; done
  [ -f "$STATE" ] && found=1
  rm -f "$STATE"
  if [ -n "$(our_links)$(our_namespaces)" ]; then
    echo "switch.sh: down: still present: $(our_links | tr '\n' ' ')$(our_namespaces | tr '\n' ' ')" >&2; return 1
  fi
  [ $found = 1 ] && say "down: namespaces, veths, bridge and state removed" || say "down: nothing to remove"
  return 0
}

do_up() {
  [ $# -eq 2 ] || die "usage: switch.sh up N RATE (e.g. up 4 1gbit)"
  local n=$1 rate=$2 rb burst i ns h v
  [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 253 ] || die "N: expected 1..253 nodes, got $n"
  rb=$(rate_bytes "$rate") || die "RATE: expected a tc rate such as 100mbit, 1gbit, 500kbit, got $rate"
  [ "$rb" -gt 0 ] || die "RATE: must be > 0, got $rate"
  if [ -f "$STATE" ] || [ -n "$(our_links)$(our_namespaces)" ]; then
    die "a switch is already up ($(cat "$STATE" 2>/dev/null | tr '\n' ' ')); run: switch.sh down"
  fi
  burst=${SWITCH_BURST:-$(( rb / 250 > 65536 ? rb / 250 : 65536 ))}
  # Anything failing from here on undoes what was made.
  local failed=0
  step() { "$@" 2> "${TMPDIR:-/tmp}/$P-switch.err" || { echo "switch.sh: up: $* failed: $(cat "${TMPDIR:-/tmp}/$P-switch.err")" >&2; failed=1; return 1; }; }
  trap 'echo "switch.sh: interrupted; undoing" >&2; do_down; exit 130' INT TERM
  {
    step ip netns add "$P-probe$$" && step ip netns del "$P-probe$$"
  } || { rm -f "${TMPDIR:-/tmp}/$P-switch.err"; die "cannot create network namespaces (need root or CAP_NET_ADMIN)"; }
  ip link add name "$BR" type bridge nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0 2>/dev/null \
    || step ip link add name "$BR" type bridge
  [ $failed = 0 ] && step ip link set "$BR" up
  for ((i = 0; i < n && failed == 0; i++)); do
    ns=$P-ns$i; h=$P-h$i; v=$P-n$i
    step ip netns add "$ns" &&
    step ip link add "$h" type veth peer name "$v" netns "$ns" &&
    step ip link set "$h" master "$BR" &&
    step ip link set "$h" up &&
    step ip -n "$ns" addr add "$SUBNET.$((i + 1))/24" dev "$v" &&
    step ip -n "$ns" link set "$v" up &&
    step ip -n "$ns" link set lo up &&
    step tc qdisc add dev "$h" root tbf rate "$rate" burst "$burst" latency "$LATENCY" &&
    step tc -n "$ns" qdisc add dev "$v" root tbf rate "$rate" burst "$burst" latency "$LATENCY"
  done
  rm -f "${TMPDIR:-/tmp}/$P-switch.err"
  if [ $failed = 1 ]; then say "up failed: undoing"; do_down; exit 1; fi
  printf 'N=%s\nRATE=%s\nBURST=%s\nLATENCY=%s\nSUBNET=%s.0/24\n' "$n" "$rate" "$burst" "$LATENCY" "$SUBNET" > "$STATE" \
    || { say "cannot write $STATE: undoing"; do_down; exit 1; }
  trap - INT TERM
  say "up: $n node(s) $P-ns0..$P-ns$((n - 1)) at $SUBNET.1..$SUBNET.$n on $BR, each port $rate both ways (state: $STATE)"
}

do_status() {
  if [ ! -f "$STATE" ]; then
    echo "switch is down$( [ -n "$(our_links)$(our_namespaces)" ] && echo " (but leftovers exist: run switch.sh down)")"
    return 1
  fi
  local n rate ns i
  n=$(sed -n 's/^N=//p' "$STATE"); rate=$(sed -n 's/^RATE=//p' "$STATE")
  echo "switch $BR: $n port(s) at $rate ($(sed -n 's/^BURST=//p' "$STATE") B burst, $(sed -n 's/^LATENCY=//p' "$STATE") latency)"
  for ((i = 0; i < n; i++)); do
    ns=$P-ns$i
    if ! ip netns list | awk '{print $1}' | grep -qx "$ns"; then echo "  node $i: namespace $ns MISSING"; continue; fi
    local addr procs tx rx
    addr=$(ip -n "$ns" -o -4 addr show dev "$P-n$i" 2>/dev/null | awk '{print $4}')
    procs=$(ip netns pids "$ns" 2>/dev/null | wc -l)
    tx=$(tc -n "$ns" -s qdisc show dev "$P-n$i" 2>/dev/null | awk '/Sent/ {print $2; exit}')
    rx=$(tc -s qdisc show dev "$P-h$i" 2>/dev/null | awk '/Sent/ {print $2; exit}')
    echo "  node $i: $ns $addr, $procs process(es), sent ${tx:-?} B, received ${rx:-?} B"
  done
}

do_run() {
  [ $# -ge 1 ] || die "usage: switch.sh run CONFIG [tether args...]"
  local config=$1; shift
  [ -f "$STATE" ] || die "the switch is down: run switch.sh up N RATE first"
  [ -x "$TETHER" ] || die "$TETHER not built (ninja -C build, or set TETHER=...)"
  local n; n=$(sed -n 's/^N=//p' "$STATE")
  tmpcfg=$(mktemp "${TMPDIR:-/tmp}/tether-switch-config.XXXXXX.json") || die "mktemp failed"
  keydir=$(mktemp -d "${TMPDIR:-/tmp}/tether-switch-keys.XXXXXX") || die "mktemp failed"
  trap 'rm -rf "$tmpcfg" "$keydir"' EXIT   # global: the trap runs after this function returns
  # The config through `tether config` only (validated as train will, errors
  # alike): its peers, then the resolved copy with every --set applied and each
  # peer's host replaced by its namespace address. The nodes read that copy;
  # the other tether args go to them unchanged.
  split_sets "$@"
  local peers count k=0 id rest ids=() hosts=()
  peers=$("$TETHER" config "$config" "${SETS[@]}" --peers) || exit 2
  [ -n "$peers" ] || die "$config: cluster.peers: absent (one entry per node)"
  count=$(printf '%s\n' "$peers" | wc -l)
  while read -r id rest; do   # line k is cluster.peers.k
    if [ "$id" -ge "$n" ]; then
      die "$config: cluster.peers[$k].id = $id, but the switch has $n port(s) (ids 0..$((n - 1))): switch.sh down; switch.sh up $count RATE"
    fi
    hosts+=(--set "cluster.peers.$k.host=$SUBNET.$((id + 1))"); ids+=("$id"); k=$((k + 1))
  done <<< "$peers"
  "$TETHER" config "$config" "${SETS[@]}" "${hosts[@]}" > "$tmpcfg" || exit 2
  # CURVE keys when the config has none (net.security "curve", the default):
  # made for this run, removed with the copy.
  ensure_keys "$tmpcfg" "$keydir" || exit 2
  [ "$KEYED_CONFIG" = "$tmpcfg" ] || cp "$KEYED_CONFIG" "$tmpcfg"
  local idlist="${ids[*]}" pids=()
  say "config $config -> $tmpcfg (hosts $SUBNET.<id+1>), ${#ids[@]} node(s) at $(sed -n 's/^RATE=//p' "$STATE")"
  for id in $idlist; do
    ip netns exec "$P-ns$id" "$TETHER" train "$tmpcfg" --node "$id" "${OTHER_ARGS[@]}" \
      > >(sed -u "s/^/[node $id] /") 2> >(sed -u "s/^/[node $id] /" >&2) &
    pids+=($!)
  done
  forward() { say "forwarding SIG$1 to ${#pids[@]} node(s)"; kill -s "$1" "${pids[@]}" 2>/dev/null; }
  trap 'forward INT' INT
  trap 'forward TERM' TERM
  wait_nodes "$idlist" "${pids[@]}"
  if [ ${#NODE_FAILURES[@]} -gt 0 ]; then echo "switch.sh: failed: ${NODE_FAILURES[*]}" >&2; return 1; fi
  say "all nodes finished"
}

case "${1:-}" in
  up) shift; do_up "$@";;
  down) shift; [ $# -eq 0 ] || die "usage: switch.sh down"; do_down;;
  status) do_status;;
  run) shift; do_run "$@";;
  -h|--help|help) usage;;
  *) usage >&2; exit 2;;
esac
