# Shared by the scripts that start one tether per node on this machine
# (local-cluster.sh, switch.sh). Source it; do not run it.
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
