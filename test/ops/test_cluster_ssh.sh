#!/usr/bin/env bash
# scripts/cluster.sh for real: a private sshd on loopback (its own host key,
# client key, authorized_keys and config in a temp dir; two ports), three
# peers on 127.0.0.1 with their own workdirs, all reached over ssh.
#   1. errors: a missing config; a bad config or --set (train's error, exit 2,
#      nothing sent); an unreachable host (named; moved there by --set on
#      cluster.peers.2.ssh_port)
#   2. `run --push-binary`: a small 3-node training finishes, the collected
#      metrics show one params_hash; `logs` collects them again; the config has
#      no keys: CURVE keys are made and each host gets only its own secret key
#   3. `start` a longer run, kill -9 one remote tether: `status` reports it
#      exited(137) and fails; `stop` leaves no process and no pid file
#   4. `run` in the foreground: a node killed -9 is reported (its exit code,
#      its last log lines) and the others are not stopped; `stop` ends them
#      and the run exits 1 naming the node; Ctrl-C (SIGINT) stops every node,
#      exit 130
#   4b. `resume --wait` after that Ctrl-C, node 2's checkpoint removed: the
#      one with the largest step is copied to every host and every node
#      resumes from it; the run finishes with one params_hash; `resume` again:
#      the checkpoints of that end are one cut, each node resumes its own
#   5. with a stand-in for `tether train` as the remote binary: a node that
#      fails right after start does not stop the others (still running when
#      it is reported); `restart NODE` relaunches it on its host as `train
#      config.json --node NODE`, plus `--resume CKPT` once its checkpoint
#      exists there; refused while it runs; an unknown node is exit 2
# Prints a doctest-style summary line; exit status non-zero on failure.
# Needs root (or sudo) to install openssh-server when it is missing.
set -uo pipefail
SRC=${TETHER_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TETHER_BUILD_ROOT:-$SRC/build}
TETHER_BIN=$BUILD/tether
CLUSTER=$SRC/scripts/cluster.sh

CASES=0 PASSED=0 FAILED=0 SKIPPED=0
summary() {
  echo "[doctest] test cases: $CASES | $PASSED passed | $FAILED failed | $SKIPPED skipped"
}
ok() { CASES=$((CASES + 1)); PASSED=$((PASSED + 1)); echo "ok    $1"; }
bad() { CASES=$((CASES + 1)); FAILED=$((FAILED + 1)); echo "FAIL  $1"; shift; [ $# -gt 0 ] && printf '      %s\n' "$@"; }
skip_all() { echo "SKIP  $1"; CASES=1; SKIPPED=1; summary; exit 0; }
# check NAME CMD...: a test case passes when CMD succeeds; its output is shown on failure.
check() {
  local name=$1; shift
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -eq 0 ]; then ok "$name"; else bad "$name" "(exit $rc)"; printf '%s\n' "$out" | tail -n 25 | sed 's/^/      | /'; fi
  return $rc
}
now() { date +%s; }

[ -x "$TETHER_BIN" ] || { bad "tether binary at $TETHER_BIN" "build it first"; summary; exit 1; }

# --- sshd -----------------------------------------------------------------------
if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    skip_all "openssh-server is not installed and this user cannot install it (not root, no sudo)"
  fi
  (source "$SRC/scripts/common.sh" && ensure_packages openssh-server openssh-client) \
    || { bad "install openssh-server"; summary; exit 1; }
fi
command -v ssh-keygen >/dev/null || { bad "ssh-keygen available"; summary; exit 1; }

T=$(mktemp -d /tmp/tether-ssh-test.XXXXXX) || exit 1
chmod 700 "$T"
SSHD_PID=""; MADE_RUN_SSHD=0
cleanup() {
  # Best effort: every process this test started, by pid.
  local f p
  for f in "$T"/host*/tether-run/*.pid "$T"/host*/tether-run/*.sup; do
    [ -f "$f" ] && p=$(cat "$f") && [ -n "$p" ] && kill -KILL "$p" 2>/dev/null
  done
  [ -n "${BG_PID:-}" ] && kill -KILL "$BG_PID" 2>/dev/null
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null && wait "$SSHD_PID" 2>/dev/null
  [ $MADE_RUN_SSHD = 1 ] && rmdir /run/sshd 2>/dev/null
  rm -rf "$T"
}
trap 'cleanup; summary' EXIT
trap 'exit 1' INT TERM

free_ports() {   # free_ports N: N distinct free TCP ports on 127.0.0.1
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r SP1 SP2 TP0 TP1 TP2 BADPORT <<< "$(free_ports 6)"
USER_NAME=$(id -un)

ssh-keygen -q -t ed25519 -N '' -f "$T/host_key" -C tether-test-host || exit 1
ssh-keygen -q -t ed25519 -N '' -f "$T/client_key" -C tether-test-client || exit 1
cp "$T/client_key.pub" "$T/authorized_keys"; chmod 600 "$T/authorized_keys"
cat > "$T/sshd_config" <<EOF
ListenAddress 127.0.0.1:$SP1
ListenAddress 127.0.0.1:$SP2
HostKey $T/host_key
PidFile $T/sshd.pid
AuthorizedKeysFile $T/authorized_keys
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowUsers $USER_NAME
MaxStartups 64
MaxSessions 64
LogLevel VERBOSE
EOF
if [ ! -d /run/sshd ] && [ "$(id -u)" -eq 0 ]; then mkdir -p /run/sshd && chmod 755 /run/sshd && MADE_RUN_SSHD=1; fi
/usr/sbin/sshd -D -e -f "$T/sshd_config" 2> "$T/sshd.log" &
SSHD_PID=$!

export TETHER_SSH_KEY=$T/client_key
export SSH_OPTS="-o UserKnownHostsFile=$T/known_hosts -o GlobalKnownHostsFile=/dev/null"
export SSH_CONNECT_TIMEOUT=5
export TETHER=$TETHER_BIN
ssh_ok() {
  ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o ConnectTimeout=3 -i "$T/client_key" \
      -o IdentitiesOnly=yes $SSH_OPTS -p "$1" "$USER_NAME@127.0.0.1" true 2>/dev/null
}
sshd_up() {
  local t0; t0=$(now)
  while [ $(( $(now) - t0 )) -lt 30 ]; do
    kill -0 "$SSHD_PID" 2>/dev/null || { cat "$T/sshd.log"; return 1; }
    ssh_ok "$SP1" && ssh_ok "$SP2" && return 0
    sleep 0.5
  done
  echo "sshd did not accept a key login within 30 s"; tail -n 20 "$T/sshd.log"; return 1
}
check "sshd on 127.0.0.1:$SP1 and :$SP2 accepts key logins" sshd_up || exit 1

# --- configs ---------------------------------------------------------------------
# make_config FILE EPOCHS: 20 steps per epoch and node
make_config() {
  python3 - "$@" "$T" "$USER_NAME" "$SP1" "$SP2" "$TP0" "$TP1" "$TP2" <<'EOF'
import json, sys
path, epochs = sys.argv[1], int(sys.argv[2])
t, user, sp1, sp2, *tps = sys.argv[3:]
peers = [{"id": i, "host": "127.0.0.1", "port": int(tps[i]), "ssh_user": user,
          "ssh_port": int(sp1 if i % 2 == 0 else sp2), "workdir": f"{t}/host{i}"} for i in range(3)]
json.dump({
    "device": "cpu",
    "cluster": {"peers": peers},
    "model": {"name": "mlp", "hidden": 16},
    "data": {"name": "synthetic", "synthetic_train": 960, "synthetic_test": 64, "batch_size": 16},
    "optimizer": {"lr": 0.05, "momentum": 0.0},
    "algorithm": {"name": "overlap", "staleness": 1, "period": 1, "mixer": "ring"},
    "train": {"epochs": epochs, "seed": 3, "threads": 1},
    "log": {"dir": "runs/ssh3", "every_steps": 5, "progress": False},
    "net": {"connect_timeout_ms": 30000, "peer_timeout_ms": 5000, "shutdown_timeout_ms": 5000},
}, open(path, "w"), indent=1)
EOF
}
make_config "$T/small.json" 1       # 20 steps
make_config "$T/long.json" 5000     # far more than the test waits for

# --- 1. errors --------------------------------------------------------------------
missing_config() {
  local out; out=$("$CLUSTER" "$T/nope.json" status 2>&1); local rc=$?
  echo "$out"; [ $rc -eq 2 ] && grep -q "nope.json" <<< "$out"
}
check "missing config: exit 2 naming the file" missing_config

bad_config() {   # refused by `tether config` with train's message, before any ssh connection
  local out want rc set
  for set in optimizer.lr=-1 cluster.peers.1.ssh_user=-oProxyCommand=x cluster.peers.7.port=1; do
    out=$(timeout 60 "$CLUSTER" "$T/small.json" start --push-binary --set "$set" 2>&1); rc=$?
    want=$("$TETHER_BIN" train "$T/small.json" --set "$set" 2>&1)
    echo "--set $set: exit $rc: $out"
    [ $rc -eq 2 ] && [ "$out" = "$want" ] || { echo "expected: $want"; return 1; }
  done
  [ ! -e "$T/host0/tether-run" ] && [ ! -e "$T/host1/tether-run" ] || { echo "something was sent"; return 1; }
  ! tail -n +"$SSHD_LOG_LINES" "$T/sshd.log" | grep "Accepted publickey" || { echo "an ssh login happened"; return 1; }
}
SSHD_LOG_LINES=$(( $(wc -l < "$T/sshd.log") + 1 ))
check "bad config or --set: exit 2 with train's exact error, nothing sent over ssh" bad_config

unreachable() {   # node 2's ssh port, moved by --set into the peers array (as tether train takes it)
  local move=(--set "cluster.peers.2.ssh_port=$BADPORT")
  local out; out=$(timeout 60 "$CLUSTER" "$T/small.json" start --tether "$TETHER_BIN" "${move[@]}" 2>&1); local rc=$?
  echo "$out"
  [ $rc -ne 0 ] && grep -q "node 2: cannot reach .*127.0.0.1 (ssh port $BADPORT)" <<< "$out" \
    && grep -q "stopping the 2 node(s) it started" <<< "$out" || return 1
  # status names it as unreachable too, and fails
  out=$(timeout 60 "$CLUSTER" "$T/small.json" status "${move[@]}" 2>&1); rc=$?
  echo "$out"
  [ $rc -ne 0 ] && grep -q "^node 2 .*unreachable.*$BADPORT" <<< "$out"
}
check "unreachable host: start fails naming it, stops the started nodes; status says unreachable" unreachable
pids_gone() {   # no process of this test's nodes is left
  local left; left=$(pgrep -f "$T/host" | tr '\n' ' ')
  [ -z "$left" ] || { echo "left: $left"; ps -o pid,args -p ${left// /,} 2>/dev/null; return 1; }
}
check "no node process left after the failed start" pids_gone

# --- 2. a small run, to the end -----------------------------------------------------
t0=$(now)
small_run() {
  timeout 300 "$CLUSTER" "$T/small.json" run --push-binary --out "$T/collected"
}
check "run --push-binary: 3 nodes over ssh finish (exit 0)" small_run
echo "      (small run: $(( $(now) - t0 )) s)"
same_hash() {   # same_hash DIR: every node's final params_hash is the same
  python3 "$SRC/test/ops/same_hash.py" "$1" 3
}
check "collected metrics: 3 nodes end with the same params_hash" same_hash "$T/collected"
check "binary pushed to every workdir" test -x "$T/host0/tether-run/tether" -a -x "$T/host1/tether-run/tether" -a -x "$T/host2/tether-run/tether"
own_key_only() {   # each workdir holds its own node's secret key (0600) and no other
  local i j
  for i in 0 1 2; do
    [ "$(stat -c %a "$T/host$i/tether-run/node-$i.key" 2>/dev/null)" = 600 ] || { echo "host$i: node-$i.key missing or not 0600"; return 1; }
    for j in 0 1 2; do
      [ "$i" = "$j" ] || [ ! -e "$T/host$i/tether-run/node-$j.key" ] || { echo "host$i holds node-$j.key"; return 1; }
    done
  done
  grep -q '"security": "curve"' "$T/host0/tether-run/config.json" || { echo "config not curve"; return 1; }
}
check "CURVE keys made: every host got only its own secret key, mode 0600" own_key_only
logs_cmd() {
  timeout 60 "$CLUSTER" "$T/small.json" logs --out "$T/logs2" || return 1
  ls -l "$T/logs2"
  for i in 0 1 2; do
    [ -s "$T/logs2/node-$i.jsonl" ] && [ -f "$T/logs2/node-$i.log" ] && [ "$(cat "$T/logs2/node-$i.exit")" = 0 ] || return 1
  done
  same_hash "$T/logs2"
}
check "logs: node-i.log, node-i.exit (0) and node-i.jsonl of every node in one directory" logs_cmd
status_done() {
  local out; out=$(timeout 60 "$CLUSTER" "$T/small.json" status 2>&1); local rc=$?
  echo "$out"; [ $rc -eq 0 ] && [ "$(grep -c 'exited(0)' <<< "$out")" = 3 ]
}
check "status after the run: 3 x exited(0), exit 0" status_done

# --- 3. start, kill -9 one node, status, stop ------------------------------------------
# wait_for SECONDS CMD...: polls CMD every 0.5 s until it succeeds or time is up.
wait_for() {
  local limit=$1; shift; local t0; t0=$(now)
  while [ $(( $(now) - t0 )) -lt "$limit" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  "$@"
}
all_stepping() {  # every node has written a metrics line
  local i; for i in 0 1 2; do [ -s "$T/host$i/runs/ssh3/node-$i.jsonl" ] || return 1; done
}
long_start() {
  rm -f "$T"/host*/runs/ssh3/*.jsonl
  timeout 60 "$CLUSTER" "$T/long.json" start --tether "$TETHER_BIN" || return 1
  local out; out=$(timeout 60 "$CLUSTER" "$T/long.json" status 2>&1); echo "$out"
  [ "$(grep -c 'running (pid' <<< "$out")" = 3 ] || return 1
  wait_for 120 all_stepping
}
check "start (background, remote --tether path): status shows 3 running, all training" long_start
PIDS=$(cat "$T"/host*/tether-run/node-*.pid 2>/dev/null | tr '\n' ' ')
kill_and_status() {
  local victim; victim=$(cat "$T/host1/tether-run/node-1.pid") || return 1
  echo "kill -9 $victim (node 1)"
  kill -KILL "$victim" || return 1
  node1_dead() {
    local out; out=$(timeout 60 "$CLUSTER" "$T/long.json" status 2>&1); local rc=$?
    echo "$out"; [ $rc -ne 0 ] && grep -q '^node 1 .*exited(137, SIGKILL)' <<< "$out"
  }
  wait_for 20 node1_dead
}
check "kill -9 of node 1's tether: status reports exited(137, SIGKILL) and exits non-zero" kill_and_status
stop_clean() {
  timeout 120 "$CLUSTER" "$T/long.json" stop --deadline 10 || return 1
  local p; for p in $PIDS; do kill -0 "$p" 2>/dev/null && { echo "pid $p still alive"; return 1; }; done
  pids_gone || return 1
  local left; left=$(ls "$T"/host*/tether-run/*.pid "$T"/host*/tether-run/*.sup 2>/dev/null)
  [ -z "$left" ] || { echo "pid files left: $left"; return 1; }
}
check "stop: no tether process left, pid files removed" stop_clean

# --- 4. foreground run: a failed node stops all; Ctrl-C stops all ------------------------
bg_run() {  # bg_run LOG: `run` in the background with SIGINT at its default (as in a terminal)
  python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    timeout 300 "$CLUSTER" "$T/long.json" run --tether "$TETHER_BIN" --out "$T/fg" > "$1" 2>&1 &
  BG_PID=$!
}
wait_bg() {  # wait_bg SECONDS: exit status of the background run, 124 if it is still running
  local t0; t0=$(now)
  while kill -0 "$BG_PID" 2>/dev/null && [ $(( $(now) - t0 )) -lt "$1" ]; do sleep 0.5; done
  kill -0 "$BG_PID" 2>/dev/null && return 124
  wait "$BG_PID"
}
started() { grep -q "3 node(s) running" "$1"; }   # start is over: the run is watching
fg_failure() {
  rm -f "$T"/host*/runs/ssh3/*.jsonl
  bg_run "$T/fg1.log"
  wait_for 120 started "$T/fg1.log" && wait_for 120 all_stepping || { cat "$T/fg1.log"; return 1; }
  local victim; victim=$(cat "$T/host2/tether-run/node-2.pid")
  echo "kill -9 $victim (node 2)"; kill -KILL "$victim"
  reported() { grep -q "^\[cluster\] node 2 failed on .*exit 137 (killed by SIGKILL)); the others keep running" "$T/fg1.log"; }
  wait_for 60 reported || { tail -n 15 "$T/fg1.log"; return 1; }
  # The script stops nobody (the survivors' own fate is tether's); `stop` ends the run.
  grep -q "stopping" "$T/fg1.log" && { echo "the run stopped nodes"; return 1; }
  timeout 120 "$CLUSTER" "$T/long.json" stop --deadline 10 || return 1
  wait_bg 90; local rc=$?
  tail -n 15 "$T/fg1.log"
  [ $rc -eq 1 ] && grep -q "cluster.sh: node 2 failed on .*exit 137 (killed by SIGKILL)" "$T/fg1.log" && pids_gone
}
t0=$(now)
check "run: node 2 killed -9 is reported, the others are not stopped; after stop, exit 1 naming node 2" fg_failure
echo "      (failure run: $(( $(now) - t0 )) s)"
fg_interrupt() {
  rm -f "$T"/host*/runs/ssh3/*.jsonl "$T"/host*/runs/ssh3/*.ckpt
  # The run holds after its start, before its watchers and its run-time
  # Ctrl-C trap exist (scripts/cluster.sh's test hook): the Ctrl-C lands in
  # that window, where one was once taken and nothing stopped the nodes.
  touch "$T/hold"
  TETHER_CLUSTER_TEST_HOLD="$T/hold" bg_run "$T/fg2.log"
  wait_for 120 started "$T/fg2.log" && wait_for 120 all_stepping || { rm -f "$T/hold"; cat "$T/fg2.log"; return 1; }
  echo "SIGINT to the run script (Ctrl-C) while it holds between the start and the watchers"; kill -INT "$BG_PID"
  sleep 0.5; rm -f "$T/hold"
  wait_bg 90; local rc=$?
  tail -n 15 "$T/fg2.log"
  [ $rc -eq 130 ] || return 1
  pids_gone || return 1
  # Every node got SIGTERM (none needed SIGKILL), exited 0 by itself and
  # wrote a checkpoint; a node that learns first of a peer's stop (its bye)
  # stops as if interrupted too.
  grep -q "killed (SIGKILL)" "$T/fg2.log" && { echo "a node needed SIGKILL"; return 1; }
  local i code; for i in 0 1 2; do
    code=$(cat "$T/fg/node-$i.exit" 2>/dev/null)
    echo "node $i: exit ${code:-none}"
    [ "$code" = 0 ] || return 1
    [ -f "$T/host$i/runs/ssh3/node-$i.ckpt" ] || { echo "node $i: no checkpoint"; return 1; }
  done
}
t0=$(now)
check "run: Ctrl-C stops every node by SIGTERM (each exits 0 with a checkpoint), exit 130" fg_interrupt
echo "      (interrupted run: $(( $(now) - t0 )) s)"

# --- 4b. resume: one checkpoint for every node, then each its own ----------------------
ckpt_get() { "$TETHER_BIN" checkpoint "$T/host$1/runs/ssh3/node-$1.ckpt" --get "$2"; }
ssh_resume() {
  local out rc i s0 s1 best best_step until
  # After the Ctrl-C every node has a checkpoint; without node 2's they are
  # not one cut: the larger step of nodes 0 and 1 (node 0 on a tie).
  s0=$(ckpt_get 0 step) && s1=$(ckpt_get 1 step) || return 1
  if [ "$s1" -gt "$s0" ]; then best=1; best_step=$s1; else best=0; best_step=$s0; fi
  rm -f "$T/host2/runs/ssh3/node-2.ckpt"
  until=$((best_step + 10))
  out=$(timeout 300 "$CLUSTER" "$T/long.json" resume --wait --tether "$TETHER_BIN" --set train.max_steps=$until --out "$T/res1" 2>&1); rc=$?
  echo "$out" | grep -v "^\[node [0-9]\] epoch " | tail -n 40
  [ $rc -eq 0 ] || { echo "exit $rc"; return 1; }
  grep -q "resume: the checkpoints are not one cut (node 0: step [0-9]*, .*; node 2: none (runs/ssh3/node-2.ckpt)); every node starts from node $best's runs/ssh3/node-$best.ckpt (step $best_step, the largest), copied to every host as tether-run/resume.ckpt" <<< "$out" || return 1
  for i in 0 1 2; do
    grep -q "^\[node $i\] resumed from tether-run/resume.ckpt at step $best_step " <<< "$out" || { echo "node $i: no resume line"; return 1; }
    cmp "$T/host$i/tether-run/resume.ckpt" "$T/host$best/tether-run/resume.ckpt" || return 1
  done
  grep -q "^\[node 2\] resumed from .*: node 2 starts from node $best's parameters, momentum and anchor" <<< "$out" || return 1
  same_hash "$T/res1" || return 1
  for i in 0 1 2; do [ "$(ckpt_get "$i" step)" = "$until" ] && [ "$(ckpt_get "$i" cut)" = true ] || { echo "node $i: not at step $until, a cut"; return 1; }; done
  # Those end checkpoints are one cut: each node its own.
  out=$(timeout 300 "$CLUSTER" "$T/long.json" resume --wait --tether "$TETHER_BIN" --set train.max_steps=$((until + 10)) --out "$T/res2" 2>&1); rc=$?
  echo "$out" | grep -v "^\[node [0-9]\] epoch " | tail -n 20
  [ $rc -eq 0 ] && grep -q "resume: every node from its own checkpoint, one cut (node 0: step $until, round [0-9]* (a cut); node 1: step $until, round [0-9]* (a cut); node 2: step $until, round [0-9]* (a cut))" <<< "$out" || return 1
  for i in 0 1 2; do
    grep -q "^\[node $i\] resumed from runs/ssh3/node-$i.ckpt at step $until (epoch [0-9]*)$" <<< "$out" || { echo "node $i: no resume line"; return 1; }
  done
  same_hash "$T/res2" && pids_gone
}
t0=$(now)
check "resume after Ctrl-C without node 2's checkpoint: node 0's or 1's copied to every host, all finish equal; again: each its own" ssh_resume
echo "      (resumed runs: $(( $(now) - t0 )) s)"

# --- 5. a stand-in for tether train: failure without stopping the others; restart ------
# `train CONFIG --node K ...` records its arguments in fake/argv-K; with
# fake/fail-K it prints lines and kills itself (SIGKILL); otherwise it runs
# until fake/stop exists or SIGTERM/SIGINT (exit 0; SIGTERM leaves fake/term-K).
mkdir -p "$T/fake"
cat > "$T/fake/tether" <<EOF
#!/usr/bin/env bash
FAKE=$T/fake
EOF
cat >> "$T/fake/tether" <<'EOF'
id=""; prev=""
for a in "$@"; do [ "$prev" = --node ] && id=$a; prev=$a; done
printf '%s\n' "$*" >> "$FAKE/argv-$id"
echo "node $id up"
if [ -f "$FAKE/fail-$id" ]; then
  sleep 1   # past start's check for an immediate failure
  for i in 1 2 3 4 5 6 7; do echo "node $id line $i"; done
  kill -KILL $$
fi
trap 'echo "node $id: SIGTERM"; touch "$FAKE/term-$id"; exit 0' TERM
trap 'echo "node $id: SIGINT"; exit 0' INT
while [ ! -f "$FAKE/stop" ]; do sleep 0.1; done
echo "node $id done"
EOF
chmod +x "$T/fake/tether"
FAKE_RUN=(--tether "$T/fake/tether")
fake_failure() {
  rm -f "$T"/fake/argv-* "$T"/fake/term-* "$T/fake/stop"; touch "$T/fake/fail-1"
  python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    timeout 300 "$CLUSTER" "$T/long.json" run "${FAKE_RUN[@]}" --out "$T/fake-out" > "$T/fake1.log" 2>&1 &
  BG_PID=$!
  reported() { grep -q "^\[cluster\] node 1 failed on .*exit 137 (killed by SIGKILL)); the others keep running" "$T/fake1.log"; }
  wait_for 60 reported || { cat "$T/fake1.log"; return 1; }
  sleep 1   # whatever the script would do after the report, it has done
  cat "$T/fake1.log"
  # The last lines, written with the report in one piece.
  grep -A5 "^\[cluster\] node 1 failed on" "$T/fake1.log" | grep -q "^\[cluster\]   node 1 line 7$" \
    || { echo "no last lines"; return 1; }
  local i; for i in 0 2; do
    kill -0 "$(cat "$T/host$i/tether-run/node-$i.pid")" || { echo "node $i was stopped"; return 1; }
  done
  kill -0 "$BG_PID" || { echo "the run ended"; return 1; }
  # Nodes 0 and 2 end by themselves; the run never signalled them.
  touch "$T/fake/stop"
  wait_bg 90; local rc=$?
  tail -n 8 "$T/fake1.log"
  grep -q "stopping" "$T/fake1.log" && { echo "the run stopped nodes"; return 1; }
  [ -e "$T/fake/term-0" ] || [ -e "$T/fake/term-2" ] && { echo "a node got SIGTERM"; return 1; }
  [ $rc -eq 1 ] && grep -q "cluster.sh: node 1 failed on .*exit 137 (killed by SIGKILL): node 1 line 7" "$T/fake1.log" \
    && grep -q "^\[node 0\] node 0 done" "$T/fake1.log" \
    && [ "$(cat "$T/fake-out/node-0.exit")" = 0 ] && [ "$(cat "$T/fake-out/node-2.exit")" = 0 ]
}
check "run: node 1 fails; reported with its last lines while nodes 0 and 2 run on; stop: they exit 0, run exit 1" fake_failure
rm -f "$T/fake/fail-1"
fake_restart() {
  local out rc want_cfg="$T/host1/tether-run/config.json"
  rm -f "$T"/fake/argv-* "$T/fake/stop" "$T/host1/runs/ssh3/node-1.ckpt"
  out=$(timeout 60 "$CLUSTER" "$T/long.json" restart 1 "${FAKE_RUN[@]}" 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] && grep -q "node 1 restarted: .* train $want_cfg --node 1$" <<< "$out" || return 1
  [ "$(cat "$T/fake/argv-1")" = "train $want_cfg --node 1" ] || { cat "$T/fake/argv-1"; return 1; }
  [ ! -e "$T/fake/argv-0" ] && [ ! -e "$T/fake/argv-2" ] || { echo "another node was started"; return 1; }
  out=$(timeout 60 "$CLUSTER" "$T/long.json" status 2>&1); echo "$out"
  grep -q "^node 1 .*running (pid" <<< "$out" || return 1
  # Refused while it runs.
  out=$(timeout 60 "$CLUSTER" "$T/long.json" restart 1 "${FAKE_RUN[@]}" 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 1 ] && grep -q "node 1 already runs" <<< "$out" || return 1
  timeout 60 "$CLUSTER" "$T/long.json" stop > /dev/null 2>&1 || return 1
  # Its checkpoint (log.dir runs/ssh3, relative to its workdir) exists: --resume it.
  mkdir -p "$T/host1/runs/ssh3" && touch "$T/host1/runs/ssh3/node-1.ckpt"
  out=$(timeout 60 "$CLUSTER" "$T/long.json" restart 1 "${FAKE_RUN[@]}" 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] || return 1
  [ "$(tail -n 1 "$T/fake/argv-1")" = "train $want_cfg --node 1 --resume runs/ssh3/node-1.ckpt" ] || { cat "$T/fake/argv-1"; return 1; }
  grep -q "^--- restarted" "$T/host1/tether-run/node-1.log" || return 1
  timeout 60 "$CLUSTER" "$T/long.json" stop > /dev/null 2>&1 || return 1
  out=$(timeout 60 "$CLUSTER" "$T/long.json" restart 9 "${FAKE_RUN[@]}" 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 2 ] && grep -q 'no node "9"' <<< "$out" && pids_gone
}
check "restart 1: train config.json --node 1 on its host, --resume once its checkpoint exists; refused while it runs" fake_restart

[ $FAILED -eq 0 ]
