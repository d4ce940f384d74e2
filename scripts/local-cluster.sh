#!/usr/bin/env bash
# Starts every node of a config on this machine, one `tether train` each.
#   scripts/local-cluster.sh CONFIG [extra tether args, e.g. --set train.epochs=2]
# Each node's output is prefixed with "[node i]". Ctrl-C (SIGINT) or SIGTERM
# is forwarded to every node (they finish in-flight rounds, write a
# checkpoint and exit 0). Exits non-zero, naming them, if any node failed.
# The config is read by `tether config` (validated first, same errors as
# train). With net.security "curve" (the default) and no public keys in the
# config, a keypair per node is made in <log.dir>/keys (ensure_keys in
# wait_nodes.sh) and the nodes run <log.dir>/keys/config.json.
# Uses build/tether (TETHER=... overrides).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/wait_nodes.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TETHER=${TETHER:-$ROOT/build/tether}
[ $# -ge 1 ] || { echo "usage: $0 CONFIG [tether args...]" >&2; exit 2; }
CONFIG=$1; shift
[ -x "$TETHER" ] || { echo "$0: $TETHER not built (run scripts/demo.sh or ninja -C build)" >&2; exit 2; }
# The node ids: `tether config --peers` (validated as `tether train` will, the
# same --set applied; its errors as train's, exit 2), first field of each line;
# no peers: one node, id 0.
split_sets "$@"
peers=$("$TETHER" config "$CONFIG" "${SETS[@]}" --peers) || exit 2
# CURVE keys when the config has none: into the run directory (log.dir/keys).
if [ -n "$peers" ]; then
  ensure_keys "$CONFIG" "$("$TETHER" config "$CONFIG" "${SETS[@]}" --get log.dir)/keys" "${SETS[@]}" || exit 2
  CONFIG=$KEYED_CONFIG
fi
ids=$(printf '%s\n' "$peers" | cut -d ' ' -f 1 | tr '\n' ' ')
[ -n "${ids// /}" ] || ids=0

pids=()
for id in $ids; do
  # Process substitution keeps $! the node's own pid; sed prefixes each line.
  "$TETHER" train "$CONFIG" --node "$id" "$@" > >(sed -u "s/^/[node $id] /") 2> >(sed -u "s/^/[node $id] /" >&2) &
  pids+=($!)
done
forward() { echo "[local-cluster] forwarding SIG$1 to ${#pids[@]} node(s)" >&2; kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'forward INT' INT
trap 'forward TERM' TERM

wait_nodes "$ids" "${pids[@]}"
if [ ${#NODE_FAILURES[@]} -gt 0 ]; then
  echo "[local-cluster] failed: ${NODE_FAILURES[*]}" >&2
  exit 1
fi
echo "[local-cluster] all nodes finished" >&2
