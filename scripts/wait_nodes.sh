# Shared by the scripts that start tether nodes on this machine
# (local-cluster.sh, switch.sh, demo.sh, cluster.sh). Source it; do not run it.
#
# split_sets ARG...: the --set options among tether's arguments. Fills SETS
# with them ("--set" "k=v" pairs; "--set=k=v" kept as is), for `tether
# config`, and OTHER_ARGS with the rest in order. The config itself is read by
# `tether config` only (validated, --set applied): no script parses JSON.
split_sets() {
  SETS=(); OTHER_ARGS=()
  while [ $# -gt 0 ]; do
    case $1 in
      --set) if [ $# -ge 2 ]; then SETS+=(--set "$2"); shift; else SETS+=(--set); fi;;
      --set=*) SETS+=("$1");;
      *) OTHER_ARGS+=("$1");;
    esac
    shift
  done
}
#
# wait_nodes "IDS" PID...: waits for every node process (node ids in IDS,
# their pids in the same order), also across trapped signals, and fills
# NODE_FAILURES with "node ID (exit RC)" for each node that failed.
wait_nodes() {
  local ids=$1; shift
  local pids=("$@") i=0 id pid rc
  NODE_FAILURES=()
  for id in $ids; do
    pid=${pids[$i]}
    while true; do
      wait "$pid"; rc=$?
      # wait returns > 128 when a trapped signal interrupts it: wait again.
      if [ $rc -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi
      break
    done
    [ $rc -eq 0 ] || NODE_FAILURES+=("node $id (exit $rc)")
    i=$((i + 1))
  done
  wait 2>/dev/null   # the output filters
}

# ensure_keys CONFIG DIR [--set k=v]...: with net.security "curve" (the
# default) and a peer of CONFIG without a public_key, makes a keypair per
# node in DIR (`tether keygen --config`; a key already there is kept) and
# writes DIR/config.json, CONFIG with the public keys and
# net.secret_key_file filled in. KEYED_CONFIG: that file, or CONFIG when it
# needs no keys. Needs TETHER.
ensure_keys() {
  local config=$1 dir=$2; shift 2
  KEYED_CONFIG=$config
  [ "$("$TETHER" config "$config" "$@" --get net.security)" = curve ] || return 0
  local n k missing=0
  n=$("$TETHER" config "$config" "$@" --peers | wc -l) || return 2
  for ((k = 0; k < n; k++)); do   # k over the cluster.peers entries
    [ -n "$("$TETHER" config "$config" "$@" --get "cluster.peers.$k.public_key")" ] || missing=1
  done
  [ "$missing" = 1 ] || return 0
  mkdir -p "$dir" || return 2
  "$TETHER" keygen --config "$config" "$@" --out "$dir" > "$dir/config.json" || return 2
  echo "[keys] CURVE keys for $n node(s) in $dir (config with the public keys: $dir/config.json)" >&2
  KEYED_CONFIG=$dir/config.json
}
