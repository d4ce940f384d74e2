#!/usr/bin/env bash
# Starts every node of a config on this machine, one `tether train` each.
#   scripts/local-cluster.sh CONFIG [extra tether args, e.g. --set train.epochs=2]
#   scripts/local-cluster.sh CONFIG restart NODE [the same extra tether args]
#   scripts/local-cluster.sh CONFIG resume [the same extra tether args]
# Each node's output is prefixed with "[node i]" and also written to
# <log.dir>/node-<i>.log. Ctrl-C (SIGINT) or SIGTERM is forwarded to every
# node (they finish in-flight rounds, write a checkpoint and exit 0).
# A node that fails (non-zero exit) is reported at once — its id, exit code
# and the last lines of its output — and the others keep running (the
# survivors go on in a view without it); the script waits for every node and
# exits 1, naming the failed nodes, if any failed.
# `restart NODE` starts that node again in the foreground with the command
# the cluster gave it (`tether train CONFIG --node NODE` and the extra
# arguments), plus `--resume CKPT` when the node's checkpoint exists (CKPT:
# train.checkpoint, or <log.dir>/node-<NODE>.ckpt, as `tether train` names
# it); run it from the same directory; its output is appended to the node's
# log; the exit status is the node's.
# `resume` starts every node as the plain form does, each with `--resume`:
# its own checkpoint when every node has one and they form one cut (the same
# round and step, `cut` true: a Ctrl-C or a periodic checkpoint); otherwise
# (after a quorum loss the survivors' failure checkpoints need not be one cut,
# and the lost nodes may have none) one file for every node, the checkpoint
# with the largest step among those that exist (the lowest node id on a tie):
# a node may resume from another node's checkpoint of the same cluster. It
# says which it chose and why. Checkpoints are read with `tether checkpoint
# FILE --get KEY`; one that cannot be read is left out, and with none to
# resume from the script exits 2. Do not pass --resume with it.
# The config is read by `tether config` (validated first, same errors as
# train). With net.security "curve" (the default) and no public keys in the
# config, a keypair per node is made in <log.dir>/keys (ensure_keys in
# wait_nodes.sh) and the nodes run <log.dir>/keys/config.json.
# Uses build/tether (TETHER=... overrides).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/wait_nodes.sh"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TETHER=${TETHER:-$ROOT/build/tether}
usage="usage: $0 CONFIG [tether args...] | $0 CONFIG restart NODE [tether args...] | $0 CONFIG resume [tether args...]"
[ $# -ge 1 ] || { echo "$usage" >&2; exit 2; }
CONFIG=$1; shift
RESTART=""
RESUME_ALL=0
if [ "${1:-}" = restart ]; then
  [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
  RESTART=$2; shift 2
elif [ "${1:-}" = resume ]; then
  RESUME_ALL=1; shift
  for a in "$@"; do
    case $a in --resume|--resume=*) echo "$0: resume chooses every node's --resume itself; pass no --resume" >&2; exit 2;; esac
  done
fi
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
logdir=$("$TETHER" config "$CONFIG" "${SETS[@]}" --get log.dir) || exit 2
mkdir -p "$logdir" || { echo "$0: cannot create log.dir $logdir" >&2; exit 1; }

# start_node ID [more tether args]: one node in the background, output
# prefixed on the terminal and appended to its log; its pid in NODE_PID.
start_node() {
  local id=$1; shift
  local log="$logdir/node-$id.log"
  # Process substitution keeps $! the node's own pid; sed prefixes each line.
  "$TETHER" train "$CONFIG" --node "$id" "$@" > >(tee -a "$log" | sed -u "s/^/[node $id] /") \
    2> >(tee -a "$log" | sed -u "s/^/[node $id] /" >&2) &
  NODE_PID=$!
}
# log_settled LOG: waits (5 s at most) until no process holds LOG open: the
# output filters of a node that ended have written its last lines.
log_settled() {
  local abs i; abs=$(realpath -- "$1" 2>/dev/null) || return 0
  for i in $(seq 50); do
    find /proc/[0-9]*/fd -maxdepth 1 -lname "$abs" 2>/dev/null | grep -q . || return 0
    sleep 0.1
  done
}
# failure_report ID RC: which node, its exit code, the last lines of its log.
failure_report() {
  log_settled "$logdir/node-$1.log"
  echo "[local-cluster] node $1 failed: $(describe_exit "$2"); last lines of $logdir/node-$1.log:"
  tail -n 5 "$logdir/node-$1.log" 2>/dev/null | sed 's/^/[local-cluster]   /'
}
# report_failure ID RC [LINE]: the report and LINE, in one write to stderr.
report_failure() {
  local msg; msg=$(failure_report "$1" "$2")
  [ $# -ge 3 ] && msg+=$'\n'$3
  printf '%s\n' "$msg" >&2
}

if [ -n "$RESTART" ]; then
  case " $ids " in *" $RESTART "*) ;; *)
    echo "$0: restart: no node \"$RESTART\" in $CONFIG (nodes: ${ids% })" >&2; exit 2;;
  esac
  extra=()
  has_resume=0
  for a in "$@"; do case $a in --resume|--resume=*) has_resume=1;; esac; done
  if [ $has_resume = 0 ]; then
    ckpt=$(checkpoint_path "$TETHER" "$CONFIG" "$RESTART" "${SETS[@]}") || exit 2
    [ -f "$ckpt" ] && extra=(--resume "$ckpt")
  fi
  echo "[local-cluster] restarting node $RESTART: $TETHER train $CONFIG --node $RESTART $* ${extra[*]}" >&2
  echo "--- restarted $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >> "$logdir/node-$RESTART.log"
  start_node "$RESTART" "$@" "${extra[@]}"
  pid=$NODE_PID
  trap 'kill -s INT "$pid" 2>/dev/null' INT
  trap 'kill -s TERM "$pid" 2>/dev/null' TERM
  wait_nodes "$RESTART" "$pid"
  [ ${#NODE_FAILURES[@]} -eq 0 ] || { report_failure "$RESTART" "$NODE_LAST_RC"; exit 1; }
  echo "[local-cluster] node $RESTART finished" >&2
  exit 0
fi

# choose_resume: fills RESUME_OF[id] with the checkpoint each node resumes
# from (see `resume` above) and says which and why; returns 2 when no node
# has a checkpoint that can be read.
declare -A RESUME_OF=()
choose_resume() {
  local id ckpt out step round cut own=1 first_step="" first_round="" best="" best_step=-1 about=""
  local -a v
  local -A path_of=()
  for id in $ids; do
    ckpt=$(checkpoint_path "$TETHER" "$CONFIG" "$id" "${SETS[@]}") || return 2
    path_of[$id]=$ckpt
    if [ ! -f "$ckpt" ]; then about+="${about:+; }node $id: none ($ckpt)"; own=0; continue; fi
    if ! out=$("$TETHER" checkpoint "$ckpt" --get step --get round --get cut 2>&1); then
      about+="${about:+; }node $id: cannot be read ($(tail -n 1 <<< "$out"))"; own=0; continue
    fi
    mapfile -t v <<< "$out"
    step=${v[0]:-}; round=${v[1]:-}; cut=${v[2]:-}
    [[ $step =~ ^[0-9]+$ ]] || { about+="${about:+; }node $id: $ckpt holds no step"; own=0; continue; }
    about+="${about:+; }node $id: step $step${round:+, round $round}"
    case $cut in true) about+=" (a cut)";; false) about+=" (written at a failure)";; esac
    # One cut: every node's at the same round and step, each written at a
    # cut (a single node's has no round and is its own cut).
    [ -n "$first_step" ] || { first_step=$step; first_round=$round; }
    if [ "$step" != "$first_step" ] || [ "$round" != "$first_round" ]; then own=0; fi
    [ "$cut" = true ] || [ -z "$round$cut" ] || own=0
    if [ "$step" -gt "$best_step" ]; then best=$id; best_step=$step; fi
  done
  if [ -z "$best" ]; then
    echo "$0: resume: no checkpoint to resume from ($about)" >&2
    return 2
  fi
  if [ $own = 1 ]; then
    for id in $ids; do RESUME_OF[$id]=${path_of[$id]}; done
    echo "[local-cluster] resume: every node from its own checkpoint, one cut ($about)" >&2
    return 0
  fi
  for id in $ids; do RESUME_OF[$id]=${path_of[$best]}; done
  echo "[local-cluster] resume: the checkpoints are not one cut ($about); every node starts from node $best's" \
    "${path_of[$best]} (step $best_step, the largest): its parameters, momentum and anchor, each node's own data shard" >&2
}
[ $RESUME_ALL = 0 ] || choose_resume || exit 2

pids=()
for id in $ids; do
  if [ $RESUME_ALL = 1 ]; then
    echo "--- resumed from ${RESUME_OF[$id]} $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >> "$logdir/node-$id.log"
    start_node "$id" "$@" --resume "${RESUME_OF[$id]}"
  else
    : > "$logdir/node-$id.log"
    start_node "$id" "$@"
  fi
  pids+=("$NODE_PID")
done
forward() { echo "[local-cluster] forwarding SIG$1 to the running node(s)" >&2; kill -s "$1" "${pids[@]}" 2>/dev/null; }
trap 'forward INT' INT
trap 'forward TERM' TERM

on_exit() {   # called by wait_nodes as each node ends
  [ "$2" -eq 0 ] && return
  report_failure "$1" "$2" "[local-cluster] the others keep running; $0 $CONFIG restart $1 starts it again"
}
NODE_EXIT_HOOK=on_exit wait_nodes "$ids" "${pids[@]}"
if [ ${#NODE_FAILURES[@]} -gt 0 ]; then
  echo "[local-cluster] failed: ${NODE_FAILURES[*]}" >&2
  exit 1
fi
echo "[local-cluster] all nodes finished" >&2
