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
# their pids in the same order), in the order they end, also across trapped
# signals; fills NODE_FAILURES with "node ID (exit RC)" for each node that
# failed, and NODE_LAST_RC with the exit code of the last to end. When
# NODE_EXIT_HOOK names a function, it is called as FUNC ID RC as each node
# ends (local-cluster.sh reports a failure at once that way).
wait_nodes() {
  local -a ids=($1); shift
  local -a left=("$@")
  local -A id_of=()
  local i done_pid rc p
  for i in "${!left[@]}"; do id_of[${left[$i]}]=${ids[$i]}; done
  NODE_FAILURES=(); NODE_LAST_RC=0
  while [ ${#left[@]} -gt 0 ]; do
    # Polled, not `wait -n`: a node that ended before `wait -n` was called
    # (reaped while the others were being started) is not a job any more and
    # `wait -n` would never return it; `wait PID` still has its status.
    done_pid=""
    for p in "${left[@]}"; do kill -0 "$p" 2>/dev/null || { done_pid=$p; break; }; done
    if [ -z "$done_pid" ]; then sleep 0.1; continue; fi
    while true; do
      wait "$done_pid" 2>/dev/null; rc=$?   # (2>/dev/null: no "Killed" job messages)
      # > 128 also when a trapped signal interrupts wait: wait again while it lives.
      if [ $rc -gt 128 ] && kill -0 "$done_pid" 2>/dev/null; then continue; fi
      break
    done
    local -a rest=()
    for p in "${left[@]}"; do [ "$p" = "$done_pid" ] || rest+=("$p"); done
    left=("${rest[@]}")
    NODE_LAST_RC=$rc
    [ $rc -eq 0 ] || NODE_FAILURES+=("node ${id_of[$done_pid]} (exit $rc)")
    [ -n "${NODE_EXIT_HOOK:-}" ] && "$NODE_EXIT_HOOK" "${id_of[$done_pid]}" "$rc"
  done
  wait 2>/dev/null   # the output filters
}
#
# describe_exit RC: an exit code in words ("exit 137 (killed by SIGKILL)").
describe_exit() {
  local rc=$1
  case $rc in
    1) echo "exit 1 (run-time failure)";;
    2) echo "exit 2 (bad usage, config or data)";;
    *) if [ "$rc" -gt 128 ] 2>/dev/null; then echo "exit $rc (killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128))))"
       else echo "exit $rc"; fi;;
  esac
}
#
# checkpoint_path TETHER CONFIG ID [--set k=v]...: where node ID writes its
# checkpoint, as `tether train` names it (runtime/config.h,
# checkpoint_path_for_node): train.checkpoint, else <log.dir>/node-<ID>.ckpt;
# in a cluster config the node id goes before the file's extension
# (x.ckpt -> x.node-<ID>.ckpt, x -> x.node-<ID>, dir/ -> dir/node-<ID>.ckpt).
# Relative paths stay relative (to the node's working directory).
checkpoint_path() {
  local bin=$1 cfg=$2 id=$3; shift 3
  local ckpt logdir nodes name stem ext
  ckpt=$("$bin" config "$cfg" "$@" --get train.checkpoint) || return 2
  logdir=$("$bin" config "$cfg" "$@" --get log.dir) || return 2
  nodes=$("$bin" config "$cfg" "$@" --peers | grep -c .)
  if [ -z "$ckpt" ]; then printf '%s/node-%s.ckpt\n' "$logdir" "$id"; return 0; fi
  if [ "$nodes" -le 1 ]; then printf '%s\n' "$ckpt"; return 0; fi
  name=${ckpt##*/}
  if [ -z "$name" ]; then printf '%snode-%s.ckpt\n' "$ckpt" "$id"; return 0; fi
  # std::filesystem's extension: from the last '.', except for a name whose
  # only '.' is its first character (".hidden"), or "." and "..".
  case $name in
    .|..) stem=$name; ext="";;
    .*.*|[!.]*.*) stem=${name%.*}; ext=.${name##*.};;
    *) stem=$name; ext="";;
  esac
  printf '%s%s.node-%s%s\n' "${ckpt%"$name"}" "$stem" "$id" "$ext"
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
