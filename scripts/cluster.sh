#!/usr/bin/env bash
# Runs a config's cluster over ssh: one `tether train CONFIG --node ID` per
# entry of cluster.peers, on that peer's host.
#
#   scripts/cluster.sh CONFIG start [--wait] [--push-binary] [--tether PATH] [--set k=v]...
#   scripts/cluster.sh CONFIG run   [same options]      # = start --wait
#   scripts/cluster.sh CONFIG status
#   scripts/cluster.sh CONFIG logs  [--out DIR]
#   scripts/cluster.sh CONFIG stop  [--deadline SECONDS]
#   scripts/cluster.sh CONFIG restart NODE [--push-binary] [--tether PATH] [--set k=v]...
#   scripts/cluster.sh CONFIG resume [--wait] [--push-binary] [--tether PATH] [--set k=v]...
#
# Per peer the config may name (besides id, host, port):
#   ssh_user   login on the host (default: ssh's default, i.e. ~/.ssh/config or $USER)
#   ssh_port   sshd's port (default 22)
#   workdir    the node's working directory on the host (default: this checkout's
#              path, i.e. the same path on every host; "~/x" and relative paths
#              are taken from the remote home). Relative log.dir / data.path in
#              the config resolve against it.
# The config is read once, here, by the local binary: `tether config CONFIG
# --set ...` validates it as `tether train` would (the same errors, exit 2)
# before anything goes over ssh, and `--peers` gives the nodes above.
# On each host, under <workdir>/tether-run/: config.json (the resolved config
# that `tether config` printed, every --set applied), node-<id>.log (stdout+stderr),
# node-<id>.pid (the tether process), node-<id>.sup (its supervisor, which
# records the exit code), node-<id>.exit (exit code once it ended).
# The metrics stay where the config says: <workdir>/<log.dir>/node-<id>.jsonl.
# With net.security "curve" (the default) and no public keys in the config,
# `start` makes a keypair per node (tether keygen) for this start: the config
# sent carries every public key and net.secret_key_file "tether-run", and each
# host receives only its own node's secret key, written 0600 as
# <workdir>/tether-run/node-<id>.key.
#
# The remote binary is <workdir>/build/tether unless --tether PATH (absolute, or
# relative to workdir) names another: build tether there first (scripts/demo.sh
# or meson setup build && ninja -C build), or pass --push-binary to copy the
# local binary ($TETHER, default build/tether) to <workdir>/tether-run/tether
# (the host then needs the same shared libraries: libzmq5, libdnnl, openblas).
#
# Commands:
#   start    starts every node in the background (setsid + nohup) and returns;
#            if any node cannot be started, the ones it started are stopped.
#   run      starts, then streams every node's output prefixed "[node i]" and
#            waits for all. Ctrl-C/SIGTERM stops every node (SIGTERM: they write
#            a checkpoint and exit 0; exit status 130). A node that fails
#            (non-zero exit, or its host lost) is reported at once — which
#            node, its exit code, the last lines of its log — and the others
#            keep running (they go on in a view without it; `restart` brings
#            it back, though `run` does not stream a restarted node); once
#            every node ended, the exit status is 1 with "node I failed: exit
#            N ...: <its last log line>". At the end the logs are collected as
#            by `logs`.
#   status   one line per node: running (pid) / exited(code) / lost (pid file,
#            no process, no exit code) / not started / unreachable, and the last
#            line of its log. Exit 0 when every node is running or exited 0.
#   logs     copies every node's node-<id>.log, node-<id>.exit and metrics
#            node-<id>.jsonl into one local directory (--out, default
#            runs/<config file name>/).
#   restart NODE  starts node NODE again on its host, in the background, with
#            the command `start` gave it (`tether train config.json --node
#            NODE`), plus `--resume CKPT` when that node's checkpoint exists
#            on its host (train.checkpoint, or <log.dir>/node-<NODE>.ckpt, as
#            `tether train` names it); its log is appended to. Refused while
#            the node runs. Use the --tether / --push-binary of the start.
#   resume   starts every node as `start` does (with --wait: as `run`), each
#            with `--resume`: its own checkpoint on its host when every node
#            has one and they form one cut (the same round and step, `cut`
#            true: a Ctrl-C or a periodic checkpoint); otherwise the one with
#            the largest step among those that exist (after a quorum loss the
#            survivors' checkpoints need not be one cut and the lost nodes
#            have none), copied through this machine to every host as
#            <workdir>/tether-run/resume.ckpt, for every node: a node may
#            resume from another node's checkpoint of the same cluster. Says
#            which it chose and why; exit 2 when no node has one. The
#            checkpoints are read on their hosts by the remote binary
#            (`tether checkpoint`): give it the --tether / --push-binary of
#            the start. The nodes' logs are appended to.
#   stop     SIGTERM to every node at once (one ssh connection per node is
#            opened first; each delivers the signal at the same wall-clock
#            moment, 0.3 s later), SIGKILL after --deadline seconds (default
#            20), then removes the pid files.
#
# Environment (options of this script only; tether itself reads none):
#   TETHER               local binary (default build/tether): reads the config,
#                        and is what --push-binary copies
#   TETHER_SSH_KEY       identity file for ssh (-i KEY -o IdentitiesOnly=yes)
#   SSH_OPTS             extra ssh options, word-split (e.g. "-o UserKnownHostsFile=/x")
#   SSH_CONNECT_TIMEOUT  seconds (default 10)
# ssh always runs with BatchMode=yes (keys only, never a password prompt) and
# StrictHostKeyChecking=accept-new.
#
# Exit codes: 0 ok, 1 a node failed / could not be started / is unreachable,
# 2 bad usage or config, 130 interrupted.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/wait_nodes.sh"   # checkpoint_path
PROG=cluster.sh
TETHER_LOCAL=${TETHER:-$ROOT/build/tether}
SSH_CONNECT_TIMEOUT=${SSH_CONNECT_TIMEOUT:-10}

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "$PROG: $*" >&2; exit 2; }
say() { echo "[cluster] $*" >&2; }

case "${1:-}" in -h|--help|help) usage; exit 0;; "") usage >&2; exit 2;; esac
[ $# -ge 2 ] || die "usage: $PROG CONFIG start|run|status|logs|stop|restart NODE|resume [options] (--help for details)"
CONFIG=$1; CMD=$2; shift 2
case "$CMD" in start|run|status|logs|stop|restart|resume) ;; *) die "unknown command \"$CMD\" (start|run|status|logs|stop|restart|resume)";; esac
RESTART_ID=""
if [ "$CMD" = restart ]; then
  [ $# -ge 1 ] && [[ $1 != -* ]] || die "usage: $PROG CONFIG restart NODE [--push-binary] [--tether PATH] [--set k=v]..."
  RESTART_ID=$1; shift
fi

WAIT=0; PUSH=0; REMOTE_BIN=""; OUT=""; DEADLINE=20; SETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wait) WAIT=1;;
    --push-binary) PUSH=1;;
    --tether) [ $# -ge 2 ] || die "--tether needs a PATH"; REMOTE_BIN=$2; shift;;
    --set) [ $# -ge 2 ] || die "--set needs k=v"; SETS+=(--set "$2"); shift;;
    --out) [ $# -ge 2 ] || die "--out needs a DIR"; OUT=$2; shift;;
    --deadline) [ $# -ge 2 ] || die "--deadline needs SECONDS"; DEADLINE=$2; shift
                [[ $DEADLINE =~ ^[0-9]+$ ]] || die "--deadline: expected whole seconds, got $DEADLINE";;
    -h|--help) usage; exit 0;;
    *) die "unknown option $1 for $CMD";;
  esac
  shift
done
[ "$CMD" = run ] && { CMD=start; WAIT=1; }
[ $PUSH = 1 ] && [ -n "$REMOTE_BIN" ] && die "--push-binary and --tether exclude each other"
[[ $SSH_CONNECT_TIMEOUT =~ ^[0-9]+$ ]] || die "SSH_CONNECT_TIMEOUT: expected seconds, got $SSH_CONNECT_TIMEOUT"
command -v ssh >/dev/null || die "ssh not found (apt-get install openssh-client)"
[ -x "$TETHER_LOCAL" ] || die "$TETHER_LOCAL not built: it reads the config here (tether config) and --push-binary sends it (ninja -C build, or set TETHER=...)"
NAME=$(basename "$CONFIG"); NAME=${NAME%.json}
[ -n "$OUT" ] || OUT=runs/$NAME

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tether-cluster.XXXXXX") || die "cannot create a temp dir"
trap 'rm -rf "$TMP"' EXIT

# --- the config: validated, --set applied, one line per peer ----------------
# `tether config` (the local binary) validates it exactly as `tether train`
# will, before anything goes over ssh; its resolved JSON is what every node
# gets, and --peers/--get read that copy (no JSON is parsed here).
"$TETHER_LOCAL" config "$CONFIG" "${SETS[@]}" > "$TMP/config.json" || exit 2
"$TETHER_LOCAL" config "$TMP/config.json" --peers > "$TMP/peers" || exit 2
LOGDIR=$("$TETHER_LOCAL" config "$TMP/config.json" --get log.dir) || exit 2
[ -s "$TMP/peers" ] || die "$CONFIG: cluster.peers: absent; cluster.sh needs one entry (id, host, port) per node"
# CURVE keys when the config has none (net.security "curve", the default):
# made here in $TMP/keys for this start; each host receives only its own
# node's secret key (on the start connection, with the config), written with
# mode 0600 as <workdir>/tether-run/node-<id>.key, which net.secret_key_file
# ("tether-run", relative to the workdir the node runs in) names.
KEYS=""
if [ "$CMD" = start ] || [ "$CMD" = resume ]; then
  source "$ROOT/scripts/wait_nodes.sh"   # ensure_keys
  TETHER=$TETHER_LOCAL ensure_keys "$TMP/config.json" "$TMP/keys" || exit 2
  if [ "$KEYED_CONFIG" != "$TMP/config.json" ]; then
    "$TETHER_LOCAL" config "$KEYED_CONFIG" --set net.secret_key_file=tether-run > "$TMP/config.json" || exit 2
    KEYS=$TMP/keys
  fi
fi
IDS=(); HOSTS=(); PORTS=(); USERS=(); SPORTS=(); WDS=()
# ID HOST PORT SSH_PORT SSH_USER WORKDIR ("-": unset; WORKDIR last, may hold spaces)
while read -r id host port sport user wd; do
  [ "$user" = - ] && user=""
  [ "$wd" = - ] && wd=$ROOT
  IDS+=("$id"); HOSTS+=("$host"); PORTS+=("$port"); USERS+=("$user"); SPORTS+=("$sport"); WDS+=("$wd")
done < "$TMP/peers"
N=${#IDS[@]}

# --- ssh ---------------------------------------------------------------------
SSH_BASE=(ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o LogLevel=ERROR
          -o ConnectTimeout="$SSH_CONNECT_TIMEOUT" -o ServerAliveInterval=5 -o ServerAliveCountMax=3)
[ -n "${TETHER_SSH_KEY:-}" ] && SSH_BASE+=(-i "$TETHER_SSH_KEY" -o IdentitiesOnly=yes)
read -r -a _extra <<< "${SSH_OPTS:-}"
SSH_BASE+=("${_extra[@]}")

target() { local k=$1; [ -n "${USERS[$k]}" ] && printf '%s@%s' "${USERS[$k]}" "${HOSTS[$k]}" || printf '%s' "${HOSTS[$k]}"; }
where() { printf '%s (ssh port %s)' "$(target "$1")" "${SPORTS[$1]}"; }
# sq WORD: quoted for any POSIX login shell on the remote side.
sq() { local q="'\\''"; printf "'%s'" "${1//\'/$q}"; }

# The part every remote action shares: paths of node K, helpers.
remote_prelude() {
  local k=$1
  cat <<EOF
W=$(sq "${WDS[$k]}"); ID=$(sq "${IDS[$k]}"); BIN=$(sq "$REMOTE_BIN"); LOGDIR=$(sq "$LOGDIR"); DEADLINE=$DEADLINE
RESTART=${RESTART:-0}; CKPT=$(sq "${CKPT:-}"); RESUME_CKPT=$(sq "${RESUME_CKPT:-}")
EOF
  cat <<'EOF'
set -u
case $W in "~") W=$HOME;; "~/"*) W=$HOME/${W#"~/"};; /*) ;; *) W=$HOME/$W;; esac
RUN=$W/tether-run
case $BIN in "") BIN=$W/build/tether;; /*) ;; *) BIN=$W/$BIN;; esac
case $LOGDIR in /*) ;; *) LOGDIR=$W/$LOGDIR;; esac
PIDF=$RUN/node-$ID.pid; SUPF=$RUN/node-$ID.sup; EXITF=$RUN/node-$ID.exit; LOGF=$RUN/node-$ID.log
HOST=$(hostname 2>/dev/null || echo remote)
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# is_node PID: PID is this node's tether (guards against a reused pid).
is_node() {
  alive "$1" || return 1
  [ -r "/proc/$1/cmdline" ] || return 0
  tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "train $RUN/config.json --node $ID "
}
last_line() { tail -c 4096 "$LOGF" 2>/dev/null | tr '\r' '\n' | grep -v '^[[:space:]]*$' | tail -n 1; }
EOF
}

# remote K ACTION_SCRIPT [STDIN_FILE]: runs the prelude + script on node K's
# host; stdout -> $TMP/out-K, stderr -> $TMP/err-K; returns ssh's status
# (255: ssh itself failed).
remote() {
  local k=$1 body=$2 in=${3:-/dev/null} script
  script="$(remote_prelude "$k")"$'\n'"$body"
  "${SSH_BASE[@]}" -p "${SPORTS[$k]}" "$(target "$k")" "bash -c $(sq "$script")" \
    < "$in" > "$TMP/out-$k" 2> "$TMP/err-$k"
}
ssh_error() {   # ssh_error K: one line on why ssh failed
  local msg; msg=$(grep -v '^[[:space:]]*$' "$TMP/err-$1" 2>/dev/null | tail -n 1)
  printf 'cannot reach %s: %s' "$(where "$1")" "${msg:-ssh failed}"
}
# on_all FUNC: FUNC K for every node at once; waits for all.
on_all() {
  local f=$1 k pids=()
  for ((k = 0; k < N; k++)); do "$f" "$k" & pids+=($!); done
  wait_jobs "${pids[@]}"
}
# wait_jobs PID...: waits for each, also through trapped signals.
wait_jobs() {
  local p
  for p in "$@"; do
    wait "$p" 2>/dev/null
    while kill -0 "$p" 2>/dev/null; do wait "$p" 2>/dev/null; done
  done
}
describe_rc() {   # exit code -> words
  local rc=$1
  case $rc in
    0) echo "exit 0";;
    1) echo "exit 1 (run-time failure)";;
    2) echo "exit 2 (bad usage, config or data)";;
    *) if [ "$rc" -gt 128 ] 2>/dev/null; then echo "exit $rc (killed by SIG$(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128))))"
       else echo "exit $rc"; fi;;
  esac
}

# --- actions (each K runs in its own background job) --------------------------
START_BODY=$(cat <<'EOF'
mkdir -p "$RUN" || { echo "ERR cannot create $RUN on $HOST"; exit 3; }
pid=$(cat "$PIDF" 2>/dev/null)
if is_node "$pid"; then echo "ERR node $ID already runs on $HOST (pid $pid): stop it first"; exit 3; fi
if [ ! -x "$BIN" ]; then
  echo "ERR no tether binary at $BIN on $HOST: build it there (meson setup build && ninja -C build in $W), or pass --push-binary"; exit 3
fi
# stdin: this node's secret key ("-": none sent), then the config
IFS= read -r key || { echo "ERR no input"; exit 3; }
if [ "$key" != - ]; then
  ( umask 077 && printf '%s\n' "$key" > "$RUN/node-$ID.key.$$" && mv -f "$RUN/node-$ID.key.$$" "$RUN/node-$ID.key" ) \
    || { echo "ERR cannot write $RUN/node-$ID.key"; exit 3; }
fi
cat > "$RUN/config.json.$$" && mv -f "$RUN/config.json.$$" "$RUN/config.json" || { echo "ERR cannot write $RUN/config.json"; exit 3; }
rm -f "$EXITF" "$PIDF" "$SUPF"
cd "$W" || { echo "ERR cannot enter $W"; exit 3; }
# A restart resumes from the node's checkpoint (relative to $W) when there is
# one, and appends to its log.
RESUME=""
if [ "$RESTART" = 1 ]; then
  [ -n "$CKPT" ] && [ -f "$CKPT" ] && RESUME=$CKPT
  echo "--- restarted $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >> "$LOGF"
elif [ -n "$RESUME_CKPT" ]; then   # `resume`: the checkpoint chosen for this node
  RESUME=$RESUME_CKPT
  echo "--- resumed from $RESUME_CKPT $(date -u '+%Y-%m-%d %H:%M:%S UTC')" >> "$LOGF"
else
  : > "$LOGF"
fi
# The supervisor: own session (no terminal, no SIGHUP from ssh), records the
# pid of tether and, when it ends, its exit code; forwards TERM/INT.
setsid nohup bash -c '
  BIN=$1 CFG=$2 ID=$3 PIDF=$4 EXITF=$5 SUPF=$6 RESUME=$7
  echo $$ > "$SUPF"
  args=(train "$CFG" --node "$ID")
  [ -n "$RESUME" ] && args+=(--resume "$RESUME")
  exec 3>&2 2>/dev/null   # tether keeps the log; bash'"'"'s own job messages go nowhere
  "$BIN" "${args[@]}" 2>&3 3>&- &
  child=$!
  echo "$child" > "$PIDF.tmp" && mv -f "$PIDF.tmp" "$PIDF"
  trap "kill -TERM $child 2>/dev/null" TERM
  trap "kill -INT $child 2>/dev/null" INT
  trap "" HUP
  while :; do wait "$child"; rc=$?; kill -0 "$child" 2>/dev/null || break; done
  echo "$rc" > "$EXITF.tmp" && mv -f "$EXITF.tmp" "$EXITF"
' tether-supervisor "$BIN" "$RUN/config.json" "$ID" "$PIDF" "$EXITF" "$SUPF" "$RESUME" >> "$LOGF" 2>&1 < /dev/null &
for i in $(seq 100); do [ -s "$PIDF" ] && break; sleep 0.05; done
pid=$(cat "$PIDF" 2>/dev/null)
[ -n "$pid" ] || { echo "ERR node $ID did not start on $HOST: $(last_line)"; exit 3; }
sleep 0.5   # catch an immediate failure (bad config, missing library)
if [ -f "$EXITF" ] && [ "$(cat "$EXITF")" != 0 ]; then
  echo "ERR node $ID exited with code $(cat "$EXITF") right away on $HOST: $(last_line)"; rm -f "$PIDF" "$SUPF"; exit 3
fi
echo "CMD $BIN train $RUN/config.json --node $ID${RESUME:+ --resume $RESUME}"
echo "OK $pid $LOGF"
EOF
)

PUSH_BODY=$(cat <<'EOF'
mkdir -p "$RUN" && cat > "$RUN/tether.$$" && chmod 755 "$RUN/tether.$$" && mv -f "$RUN/tether.$$" "$RUN/tether" \
  && echo "OK $RUN/tether" || { rm -f "$RUN/tether.$$"; echo "ERR cannot write $RUN/tether on $HOST"; exit 3; }
EOF
)

STATUS_BODY=$(cat <<'EOF'
pid=$(cat "$PIDF" 2>/dev/null)
if [ -f "$EXITF" ]; then echo "exited $(cat "$EXITF")"
elif is_node "$pid"; then echo "running $pid"
elif [ -n "$pid" ]; then echo "lost $pid"
else echo "none"; fi
echo "$(last_line)"
EOF
)

STOP_BODY=$(cat <<'EOF'
pid=$(cat "$PIDF" 2>/dev/null); sup=$(cat "$SUPF" 2>/dev/null)
how="was not running"
# Connected: wait for the local "go AT_MS" (or stdin's end), then for the
# wall-clock time AT_MS (at most 1 s away), so that every node of the cluster
# gets its SIGTERM at the same moment (clocks in sync) rather than one ssh
# handshake after another: a node that stops early looks lost to the others.
echo READY
go=""; at=""
read -r go at || true
if [[ ${at:-} =~ ^[0-9]+$ ]]; then
  now=$(date +%s%3N 2>/dev/null)
  if [[ $now =~ ^[0-9]+$ ]] && [ "$at" -gt "$now" ]; then
    d=$((at - now)); [ $d -gt 1000 ] && d=1000
    sleep "$((d / 1000)).$(printf '%03d' $((d % 1000)))"
  fi
fi
if is_node "$pid"; then
  kill -TERM "$pid" 2>/dev/null
  t=0
  while is_node "$pid" && [ $t -lt $((DEADLINE * 10)) ]; do sleep 0.1; t=$((t + 1)); done
  if is_node "$pid"; then kill -KILL "$pid" 2>/dev/null; how="killed (SIGKILL) after ${DEADLINE}s"; else how="stopped"; fi
fi
# The supervisor records the exit code and ends; give it a moment.
for i in $(seq 30); do alive "$sup" || break; sleep 0.1; done
if alive "$sup"; then kill -KILL "$sup" 2>/dev/null; fi
for i in $(seq 30); do is_node "$pid" || break; sleep 0.1; done
rm -f "$PIDF" "$SUPF" "$PIDF.tmp"
[ -f "$EXITF" ] && how="$how, exit code $(cat "$EXITF")"
echo "OK $how"
EOF
)

LOGS_BODY=$(cat <<'EOF'
a=(); b=()
for f in "node-$ID.log" "node-$ID.exit"; do [ -f "$RUN/$f" ] && a+=("$f"); done
[ -f "$LOGDIR/node-$ID.jsonl" ] && b+=("node-$ID.jsonl")
if [ ${#a[@]} -eq 0 ] && [ ${#b[@]} -eq 0 ]; then echo "no logs of node $ID under $RUN or $LOGDIR on $HOST" >&2; exit 3; fi
args=()
[ ${#a[@]} -gt 0 ] && args+=(-C "$RUN" "${a[@]}")
[ ${#b[@]} -gt 0 ] && args+=(-C "$LOGDIR" "${b[@]}")
[ ${#b[@]} -gt 0 ] || echo "node $ID has no metrics yet ($LOGDIR/node-$ID.jsonl)" >&2
tar -cf - "${args[@]}"
EOF
)

# resume: this node's checkpoint header (step, round, cut: one line each after
# "OK"), "NONE" when there is no file, "BAD <why>" when it cannot be read.
META_BODY=$(cat <<'EOF'
cd "$W" 2>/dev/null || { echo "NONE"; exit 0; }
[ -f "$CKPT" ] || { echo "NONE"; exit 0; }
[ -x "$BIN" ] || { echo "ERR no tether binary at $BIN on $HOST (give the --tether or --push-binary of the start)"; exit 3; }
if out=$("$BIN" checkpoint "$CKPT" --get step --get round --get cut 2>&1); then echo OK; printf '%s\n' "$out"
else echo "BAD $(printf '%s\n' "$out" | tail -n 1)"; fi
EOF
)
FETCH_BODY=$(cat <<'EOF'
cd "$W" && cat -- "$CKPT"
EOF
)
PUT_BODY=$(cat <<'EOF'
mkdir -p "$RUN" && cat > "$RUN/resume.ckpt.$$" && mv -f "$RUN/resume.ckpt.$$" "$RUN/resume.ckpt" \
  && echo "OK" || { rm -f "$RUN/resume.ckpt.$$"; echo "ERR cannot write $RUN/resume.ckpt on $HOST"; exit 3; }
EOF
)

WATCH_BODY=$(cat <<'EOF'
sup=$(cat "$SUPF" 2>/dev/null)
if alive "$sup"; then tail -n +1 -F --pid="$sup" "$LOGF" 2>/dev/null; else cat "$LOGF" 2>/dev/null; fi
if [ -f "$EXITF" ]; then echo "__TETHER_EXIT__ $(cat "$EXITF")"; else echo "__TETHER_EXIT__ lost"; fi
EOF
)

start_one() {
  local k=$1 rc RESUME_CKPT=""
  [ -f "$TMP/resume-$k" ] && RESUME_CKPT=$(cat "$TMP/resume-$k")   # resume: this node's --resume
  # the node's own secret key only, then the config
  { if [ -n "$KEYS" ]; then head -n 1 "$KEYS/node-${IDS[$k]}.key"; else echo -; fi
    cat "$TMP/config.json"; } > "$TMP/start-$k"
  remote "$k" "$START_BODY" "$TMP/start-$k"; rc=$?
  if [ $rc -eq 255 ]; then echo "node ${IDS[$k]}: $(ssh_error "$k")" > "$TMP/res-$k"; return; fi
  local line; line=$(grep -E '^(OK|ERR) ' "$TMP/out-$k" | tail -n 1)
  case $line in
    OK*) set -- $line; echo "OK" > "$TMP/res-$k"
         say "node ${IDS[$k]} started on $(where "$k"): pid $2, log $3"
         grep '^CMD ' "$TMP/out-$k" | tail -n 1 | cut -c5- > "$TMP/cmd-$k";;
    ERR*) echo "node ${IDS[$k]}: ${line#ERR }" > "$TMP/res-$k";;
    *) echo "node ${IDS[$k]}: start failed on $(where "$k") (exit $rc): $(tail -n 1 "$TMP/err-$k" 2>/dev/null)" > "$TMP/res-$k";;
  esac
}

meta_one() {   # resume: node K's checkpoint (path in ckpt-K) as meta-K: OK/NONE/BAD lines
  local k=$1 rc CKPT; CKPT=$(cat "$TMP/ckpt-$k")
  remote "$k" "$META_BODY"; rc=$?
  if [ $rc -eq 255 ]; then echo "node ${IDS[$k]}: $(ssh_error "$k")" > "$TMP/res-$k"; return; fi
  case $(head -n 1 "$TMP/out-$k") in
    OK|NONE|BAD*) cp "$TMP/out-$k" "$TMP/meta-$k"; echo OK > "$TMP/res-$k";;
    *) echo "node ${IDS[$k]}: $(grep -h . "$TMP/out-$k" "$TMP/err-$k" | tail -n 1 | sed 's/^ERR //')" > "$TMP/res-$k";;
  esac
}
put_one() {    # resume: $TMP/resume.ckpt to node K's host as tether-run/resume.ckpt
  local k=$1 rc
  remote "$k" "$PUT_BODY" "$TMP/resume.ckpt"; rc=$?
  if [ $rc -eq 255 ]; then echo "node ${IDS[$k]}: $(ssh_error "$k")" > "$TMP/res-$k"
  elif grep -q '^OK' "$TMP/out-$k"; then echo OK > "$TMP/res-$k"
  else echo "node ${IDS[$k]}: $(cat "$TMP/out-$k" "$TMP/err-$k" | tail -n 1 | sed 's/^ERR //')" > "$TMP/res-$k"; fi
}

push_one() {
  local k=$1 rc
  remote "$k" "$PUSH_BODY" "$TETHER_LOCAL"; rc=$?
  if [ $rc -eq 255 ]; then echo "node ${IDS[$k]}: $(ssh_error "$k")" > "$TMP/res-$k"
  elif grep -q '^OK' "$TMP/out-$k"; then echo OK > "$TMP/res-$k"
  else echo "node ${IDS[$k]}: $(cat "$TMP/out-$k" "$TMP/err-$k" | tail -n 1)" > "$TMP/res-$k"; fi
}

status_one() {
  local k=$1 rc state detail last
  remote "$k" "$STATUS_BODY"; rc=$?
  if [ $rc -ne 0 ]; then
    printf 'node %-3s %-28s unreachable  %s\n' "${IDS[$k]}" "${HOSTS[$k]}:${PORTS[$k]}" "$(ssh_error "$k")" > "$TMP/res-$k"
    echo bad > "$TMP/ok-$k"; return
  fi
  read -r state detail < "$TMP/out-$k"; last=$(sed -n 2p "$TMP/out-$k")
  local ok=good
  case $state in
    running) state="running (pid $detail)";;
    exited) [ "$detail" = 0 ] || ok=bad; state="exited($detail)"
            [ "$detail" -gt 128 ] 2>/dev/null && state="exited($detail, SIG$(kill -l $((detail - 128)) 2>/dev/null))";;
    lost) ok=bad; state="lost (pid $detail gone, no exit code)";;
    *) ok=bad; state="not started";;
  esac
  printf 'node %-3s %-28s %-24s | %s\n' "${IDS[$k]}" "${HOSTS[$k]}:${PORTS[$k]}" "$state" "$last" > "$TMP/res-$k"
  echo $ok > "$TMP/ok-$k"
}

stop_one() {
  local k=$1 rc
  remote "$k" "$STOP_BODY" "$TMP/go-$k"; rc=$?
  if [ $rc -eq 255 ]; then echo "node ${IDS[$k]}: $(ssh_error "$k")" > "$TMP/res-$k"; echo bad > "$TMP/ok-$k"; return; fi
  echo "node ${IDS[$k]}: $(grep '^OK' "$TMP/out-$k" | sed 's/^OK //')" > "$TMP/res-$k"; echo good > "$TMP/ok-$k"
}

logs_one() {
  local k=$1 rc
  remote "$k" "$LOGS_BODY"; rc=$?
  if [ $rc -eq 255 ]; then echo "node ${IDS[$k]}: $(ssh_error "$k")" > "$TMP/res-$k"; echo bad > "$TMP/ok-$k"; return; fi
  if [ $rc -ne 0 ]; then echo "node ${IDS[$k]}: $(tail -n 1 "$TMP/err-$k")" > "$TMP/res-$k"; echo bad > "$TMP/ok-$k"; return; fi
  if tar -xf "$TMP/out-$k" -C "$OUT" 2> "$TMP/tar-$k"; then
    echo "node ${IDS[$k]}: $(tar -tf "$TMP/out-$k" | tr '\n' ' ')$(grep -v '^$' "$TMP/err-$k" | tail -n 1 | sed 's/^/ — /')" > "$TMP/res-$k"
    echo good > "$TMP/ok-$k"
  else
    echo "node ${IDS[$k]}: cannot unpack: $(tail -n 1 "$TMP/tar-$k")" > "$TMP/res-$k"; echo bad > "$TMP/ok-$k"
  fi
}

all_nodes() { seq 0 $((N - 1)); }
report() {   # report [K...]: prints res-K (default: every node); returns 1 if any ok-K is "bad"
  local k bad=0 ks=("$@")
  [ $# -gt 0 ] || ks=($(all_nodes))
  for k in "${ks[@]}"; do
    cat "$TMP/res-$k" 2>/dev/null
    [ "$(cat "$TMP/ok-$k" 2>/dev/null)" = bad ] && bad=1
  done
  return $bad
}

do_stop() {   # do_stop [K...]: those nodes (default: every node)
  local k pids=() fds=() fd t0 ks=("$@")
  [ $# -gt 0 ] || ks=($(all_nodes))
  say "stopping ${#ks[@]} node(s) (SIGTERM, SIGKILL after ${DEADLINE}s)"
  rm -f "$TMP"/res-* "$TMP"/ok-* "$TMP"/out-*
  for k in "${ks[@]}"; do
    rm -f "$TMP/go-$k"; mkfifo "$TMP/go-$k" || die "mkfifo failed in $TMP"
    stop_one "$k" & pids+=($!)
    exec {fd}> "$TMP/go-$k"; fds+=("$fd")   # unblocks the job's open of its stdin
  done
  # Every connection that can be made says READY (bounded by the ssh timeout).
  t0=$SECONDS
  while [ $((SECONDS - t0)) -le $((SSH_CONNECT_TIMEOUT + 5)) ]; do
    local waiting=0
    for k in "${ks[@]}"; do
      grep -q '^READY' "$TMP/out-$k" 2>/dev/null || [ -e "$TMP/res-$k" ] || waiting=1
    done
    [ $waiting = 0 ] && break
    sleep 0.05
  done
  local at=$(( $(date +%s%3N) + 300 ))
  for fd in "${fds[@]}"; do ( trap '' PIPE; echo "go $at" >&"$fd" ) 2>/dev/null; exec {fd}>&-; done
  wait_jobs "${pids[@]}"
  report "${ks[@]}"
}
do_status() { on_all status_one; report; }
do_logs() {
  mkdir -p "$OUT" || die "cannot create $OUT"
  on_all logs_one; report; local rc=$?
  say "logs of $N node(s) in $OUT/"
  return $rc
}

# do_push: the local binary to every (host, ssh port, user, workdir) once;
# the nodes then run it (REMOTE_BIN); returns 1 naming the hosts that failed.
do_push() {
  local k failed=()
  # One copy per (host, ssh port, user, workdir).
  declare -A seen=(); local pk=()
  for ((k = 0; k < N; k++)); do
    local key="$(target "$k")|${SPORTS[$k]}|${WDS[$k]}"
    [ -n "${seen[$key]:-}" ] && continue; seen[$key]=1; pk+=("$k")
  done
  say "pushing $TETHER_LOCAL to ${#pk[@]} host(s)"
  local pids=()
  for k in "${pk[@]}"; do push_one "$k" & pids+=($!); done
  wait_jobs "${pids[@]}"
  for k in "${pk[@]}"; do [ "$(cat "$TMP/res-$k")" = OK ] || failed+=("$(cat "$TMP/res-$k")"); done
  if [ ${#failed[@]} -gt 0 ]; then printf '%s: %s\n' "$PROG" "${failed[@]}" >&2; return 1; fi
  REMOTE_BIN=tether-run/tether
  PUSH=0
}

do_start() {
  local k failed=()
  if [ $PUSH = 1 ]; then do_push || return 1; fi
  rm -f "$TMP"/res-*
  on_all start_one
  local started=()
  for ((k = 0; k < N; k++)); do
    if [ "$(cat "$TMP/res-$k" 2>/dev/null)" = OK ]; then started+=("$k"); else failed+=("$(cat "$TMP/res-$k" 2>/dev/null || echo "node ${IDS[$k]}: no answer")"); fi
  done
  if [ ${#failed[@]} -gt 0 ]; then
    printf '%s: %s\n' "$PROG" "${failed[@]}" >&2
    if [ ${#started[@]} -gt 0 ]; then say "stopping the ${#started[@]} node(s) it started"; do_stop "${started[@]}" >&2; fi
    return 1
  fi
  say "$N node(s) running; scripts/cluster.sh $CONFIG status|logs|stop"
}

# --- foreground: stream, wait, report failures, stop all on Ctrl-C -------------
watch_one() {   # runs in the background: prefixed output; result in wres-K
  local k=$1 id=${IDS[$1]} line rc kept=0
  trap '' INT TERM   # Ctrl-C reaches the whole process group: the main shell stops the nodes
  : > "$TMP/last-$k"; : > "$TMP/log-$k"
  {
    "${SSH_BASE[@]}" -p "${SPORTS[$k]}" "$(target "$k")" \
      "bash -c $(sq "$(remote_prelude "$k")"$'\n'"$WATCH_BODY")" < /dev/null 2> "$TMP/werr-$k"
    echo "__SSH_RC__ $?"
  } | while IFS= read -r line; do
    case $line in
      "__TETHER_EXIT__ "*) echo "${line#__TETHER_EXIT__ }" > "$TMP/wres-$k";;
      "__SSH_RC__ "*) rc=${line#__SSH_RC__ }
                      [ -s "$TMP/wres-$k" ] || echo "ssh $rc" > "$TMP/wres-$k";;
      *) line=${line//$'\r'/}; printf '[node %s] %s\n' "$id" "$line"
         [ -n "${line//[[:space:]]/}" ] || continue
         printf '%s\n' "$line" > "$TMP/last-$k"
         # The last lines, for the failure report (cut back every 1000 lines).
         printf '%s\n' "$line" >> "$TMP/log-$k"; kept=$((kept + 1))
         if [ $kept -ge 1000 ]; then tail -n 5 "$TMP/log-$k" > "$TMP/log-$k.cut"; mv -f "$TMP/log-$k.cut" "$TMP/log-$k"; kept=5; fi;;
    esac
  done
}

do_run() {
  local k wpids=() interrupted=0 stopping=0 first=""
  declare -A node_of=()
  # Ctrl-C while starting: finish starting, then stop what runs.
  trap 'interrupted=1; say "interrupted: the nodes will be stopped once started"' INT TERM
  do_start || { trap - INT TERM; [ $interrupted = 1 ] && return 130; return 1; }
  if [ $interrupted = 1 ]; then do_stop >&2; trap - INT TERM; say "interrupted; nodes stopped"; return 130; fi
  # Test hook (test/ops/test_cluster_ssh.sh): hold here, between the start
  # and the watchers, while the file TETHER_CLUSTER_TEST_HOLD names exists
  # (at most 60 s), so that a Ctrl-C lands in this window every time.
  local held; for ((held = 0; held < 600; held++)); do [ -e "${TETHER_CLUSTER_TEST_HOLD:-/nonexistent}" ] || break; sleep 0.1; done
  for ((k = 0; k < N; k++)); do rm -f "$TMP/wres-$k"; watch_one "$k" & wpids+=($!); node_of[$!]=$k; done
  stop_all_once() { [ $stopping = 1 ] && return; stopping=1; do_stop >&2; }
  trap 'interrupted=1; say "interrupted: stopping every node"; stop_all_once' INT TERM
  # A Ctrl-C after the check above and before this trap (while the watchers
  # started) only set the flag: act on it now, or nothing would stop the nodes.
  if [ $interrupted = 1 ]; then say "interrupted: stopping every node"; stop_all_once; fi
  local done_pid res p
  while [ ${#wpids[@]} -gt 0 ]; do
    # Polled, not `wait -n`: a watcher that ended before `wait -n` was called
    # is not a job any more and `wait -n` would not return it (wait_nodes.sh).
    done_pid=""
    for p in "${wpids[@]}"; do kill -0 "$p" 2>/dev/null || { done_pid=$p; break; }; done
    if [ -z "$done_pid" ]; then sleep 0.2; continue; fi
    wait "$done_pid" 2>/dev/null
    local rest=()
    for p in "${wpids[@]}"; do [ "$p" = "$done_pid" ] || rest+=("$p"); done
    wpids=("${rest[@]}")
    k=${node_of[$done_pid]}
    res=$(cat "$TMP/wres-$k" 2>/dev/null || echo "ssh ?")
    if [ "$res" != 0 ] && [ $stopping = 0 ]; then
      # Reported at once; the others keep running (a view without it).
      [ -n "$first" ] || first=$k
      local report="[cluster] node ${IDS[$k]} failed on $(where "$k") ($(describe_res "$k" "$res")); the others keep running (scripts/cluster.sh $CONFIG restart ${IDS[$k]} starts it again); last lines of its log:" l
      while IFS= read -r l; do report+=$'\n'"[cluster]   $l"; done < <(tail -n 5 "$TMP/log-$k")
      printf '%s\n' "$report" >&2   # one write: the report's lines stay together
    fi
  done
  trap - INT TERM
  local failed=()
  for ((k = 0; k < N; k++)); do
    res=$(cat "$TMP/wres-$k" 2>/dev/null || echo "ssh ?")
    [ "$res" = 0 ] || failed+=("$k")
  done
  do_logs >&2 || true
  if [ $interrupted = 1 ]; then say "interrupted; nodes stopped"; return 130; fi
  if [ ${#failed[@]} -gt 0 ]; then
    [ -n "$first" ] || first=${failed[0]}
    echo "$PROG: node ${IDS[$first]} failed on $(where "$first"): $(describe_res "$first" "$(cat "$TMP/wres-$first" 2>/dev/null)"): $(cat "$TMP/last-$first" 2>/dev/null)" >&2
    for k in "${failed[@]}"; do
      [ "$k" = "$first" ] && continue
      echo "$PROG:   then node ${IDS[$k]}: $(describe_res "$k" "$(cat "$TMP/wres-$k" 2>/dev/null)"): $(cat "$TMP/last-$k" 2>/dev/null)" >&2
    done
    return 1
  fi
  say "all $N node(s) finished"
}
describe_res() {   # describe_res K RESULT: words for a watcher's result
  local k=$1 res=$2
  case $res in
    lost) echo "lost: its process vanished without an exit code";;
    "ssh "*) echo "lost contact with $(where "$k") ($(grep -v '^$' "$TMP/werr-$k" 2>/dev/null | tail -n 1 || echo "ssh ${res#ssh }"))";;
    *) describe_rc "$res";;
  esac
}

start_background() {
  local interrupted=0
  trap 'interrupted=1; say "interrupted: the nodes will be stopped once started"' INT TERM
  do_start; local rc=$?
  trap - INT TERM
  if [ $interrupted = 1 ]; then [ $rc -eq 0 ] && do_stop >&2; say "interrupted; nodes stopped"; return 130; fi
  return $rc
}

# do_restart: node RESTART_ID again on its host (start_one with RESTART=1:
# --resume its checkpoint when it exists there).
do_restart() {
  local k found=""
  for ((k = 0; k < N; k++)); do [ "${IDS[$k]}" = "$RESTART_ID" ] && found=$k; done
  [ -n "$found" ] || die "restart: no node \"$RESTART_ID\" in $CONFIG (nodes: ${IDS[*]})"
  k=$found
  if [ $PUSH = 1 ]; then
    push_one "$k"
    [ "$(cat "$TMP/res-$k")" = OK ] || { echo "$PROG: $(cat "$TMP/res-$k")" >&2; return 1; }
    REMOTE_BIN=tether-run/tether
  fi
  CKPT=$(checkpoint_path "$TETHER_LOCAL" "$TMP/config.json" "$RESTART_ID") || exit 2
  RESTART=1 start_one "$k"
  if [ "$(cat "$TMP/res-$k" 2>/dev/null)" != OK ]; then
    echo "$PROG: $(cat "$TMP/res-$k" 2>/dev/null || echo "node $RESTART_ID: no answer")" >&2
    return 1
  fi
  say "node $RESTART_ID restarted: $(cat "$TMP/cmd-$k" 2>/dev/null)"
}

# do_resume: every node --resume (its own checkpoints at one cut, else the
# largest step's for every node, copied to every host), then start (--wait: run).
do_resume() {
  local k step round cut own=1 first="" best="" best_step=-1 about="" failed=()
  if [ $PUSH = 1 ]; then do_push || return 1; fi
  for ((k = 0; k < N; k++)); do
    checkpoint_path "$TETHER_LOCAL" "$TMP/config.json" "${IDS[$k]}" > "$TMP/ckpt-$k" || exit 2
  done
  rm -f "$TMP"/res-* "$TMP"/meta-* "$TMP"/resume-*
  on_all meta_one
  for ((k = 0; k < N; k++)); do
    [ "$(cat "$TMP/res-$k" 2>/dev/null)" = OK ] || failed+=("$(cat "$TMP/res-$k" 2>/dev/null || echo "node ${IDS[$k]}: no answer")")
  done
  if [ ${#failed[@]} -gt 0 ]; then printf '%s: %s\n' "$PROG" "${failed[@]}" >&2; return 1; fi
  for ((k = 0; k < N; k++)); do
    local id=${IDS[$k]} path; path=$(cat "$TMP/ckpt-$k")
    case $(head -n 1 "$TMP/meta-$k") in
      NONE) about+="${about:+; }node $id: none ($path)"; own=0; continue;;
      BAD*) about+="${about:+; }node $id: cannot be read ($(head -n 1 "$TMP/meta-$k" | cut -c5-))"; own=0; continue;;
    esac
    step=$(sed -n 2p "$TMP/meta-$k"); round=$(sed -n 3p "$TMP/meta-$k"); cut=$(sed -n 4p "$TMP/meta-$k")
    [[ $step =~ ^[0-9]+$ ]] || { about+="${about:+; }node $id: $path holds no step"; own=0; continue; }
    about+="${about:+; }node $id: step $step${round:+, round $round}"
    case $cut in true) about+=" (a cut)";; false) about+=" (written at a failure)";; esac
    # One cut: every node's at the same round and step, each written at a cut.
    [ -n "$first" ] || first="$step/$round"
    [ "$step/$round" = "$first" ] || own=0
    [ "$cut" = true ] || own=0
    if [ "$step" -gt "$best_step" ]; then best=$k; best_step=$step; fi
  done
  if [ -z "$best" ]; then
    echo "$PROG: resume: no checkpoint to resume from ($about)" >&2
    return 2
  fi
  if [ $own = 1 ]; then
    for ((k = 0; k < N; k++)); do cp "$TMP/ckpt-$k" "$TMP/resume-$k"; done
    say "resume: every node from its own checkpoint, one cut ($about)"
  else
    say "resume: the checkpoints are not one cut ($about); every node starts from node ${IDS[$best]}'s" \
        "$(cat "$TMP/ckpt-$best") (step $best_step, the largest), copied to every host as tether-run/resume.ckpt:" \
        "its parameters, momentum and anchor, each node's own data shard"
    local CKPT; CKPT=$(cat "$TMP/ckpt-$best")
    remote "$best" "$FETCH_BODY" || { echo "$PROG: cannot copy node ${IDS[$best]}'s $CKPT from $(where "$best"): $(tail -n 1 "$TMP/err-$best")" >&2; return 1; }
    mv -f "$TMP/out-$best" "$TMP/resume.ckpt"
    "$TETHER_LOCAL" checkpoint "$TMP/resume.ckpt" --get step > /dev/null || { echo "$PROG: the copy of $CKPT is not whole" >&2; return 1; }
    rm -f "$TMP"/res-*
    on_all put_one
    failed=()
    for ((k = 0; k < N; k++)); do
      [ "$(cat "$TMP/res-$k" 2>/dev/null)" = OK ] || failed+=("$(cat "$TMP/res-$k" 2>/dev/null || echo "node ${IDS[$k]}: no answer")")
      echo tether-run/resume.ckpt > "$TMP/resume-$k"
    done
    if [ ${#failed[@]} -gt 0 ]; then printf '%s: %s\n' "$PROG" "${failed[@]}" >&2; return 1; fi
  fi
  if [ $WAIT = 1 ]; then do_run; else start_background; fi
}

case $CMD in
  resume) do_resume;;
  restart) do_restart;;
  start) if [ $WAIT = 1 ]; then do_run; else start_background; fi;;
  status) do_status;;
  logs) do_logs;;
  stop) do_stop;;
esac
