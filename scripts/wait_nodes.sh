# Shared by the scripts that start tether nodes on this machine
# (local-cluster.sh, switch.sh, demo.sh). Source it; do not run it.
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
