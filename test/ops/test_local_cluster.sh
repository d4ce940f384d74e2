#!/usr/bin/env bash
# scripts/local-cluster.sh: a node that fails does not stop the others, and
# `restart NODE` relaunches a node with the command the cluster gave it.
#   1. with a stand-in for `tether train` (`tether config` is the real
#      binary): node 1 of 3 kills itself (SIGKILL) right after start; the
#      script reports it at once (node, exit 137, the last lines of its log)
#      while nodes 0 and 2 still run; once they end (exit 0), the script exits
#      1 naming node 1
#      (and wait_nodes reports a node that ended before the wait began at once)
#   2. `restart 1` runs `tether train CONFIG --node 1 ARGS`, plus `--resume
#      CKPT` once node 1's checkpoint exists (train.checkpoint x.ckpt in a
#      cluster config: x.node-1.ckpt); an unknown node is exit 2; a restarted
#      node that fails is exit 1 with its report
#   3. the real binary: a 2-node run writes its checkpoints where the script's
#      checkpoint_path says, and each node's output to <log.dir>/node-<id>.log
#   4. `resume` (the stand-in, then the real binary): every node its own
#      checkpoint when they form one cut; else every node the one with the
#      largest step (steps differ, or a node has none), saying which and why;
#      the real 2-node cluster resumed from node 0's file finishes; failure
#      checkpoints (cut false) are not a cut; no checkpoint, or an explicit
#      --resume: exit 2
# Prints a doctest-style summary line; exit status non-zero on failure.
set -uo pipefail
SRC=${TETHER_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TETHER_BUILD_ROOT:-$SRC/build}
TETHER_BIN=$BUILD/tether
LOCAL=$SRC/scripts/local-cluster.sh

CASES=0 PASSED=0 FAILED=0
summary() { echo "[doctest] test cases: $CASES | $PASSED passed | $FAILED failed | 0 skipped"; }
ok() { CASES=$((CASES + 1)); PASSED=$((PASSED + 1)); echo "ok    $1"; }
bad() { CASES=$((CASES + 1)); FAILED=$((FAILED + 1)); echo "FAIL  $1"; }
# check NAME CMD...: a test case passes when CMD succeeds; its output is shown on failure.
check() {
  local name=$1; shift
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -eq 0 ]; then ok "$name"; else bad "$name"; echo "      (exit $rc)"; printf '%s\n' "$out" | tail -n 30 | sed 's/^/      | /'; fi
  return $rc
}
now() { date +%s; }
# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds or time is up.
wait_for() {
  local limit=$1; shift; local t0; t0=$(now)
  while [ $(( $(now) - t0 )) -lt "$limit" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@"
}

[ -x "$TETHER_BIN" ] || { bad "tether binary at $TETHER_BIN"; summary; exit 1; }
T=$(mktemp -d /tmp/tether-local-cluster-test.XXXXXX) || exit 1
BG_PID=""
cleanup() {
  local f p
  touch "$T/fake/stop" 2>/dev/null
  for f in "$T"/fake/pid-*; do [ -f "$f" ] && p=$(cat "$f") && kill -KILL "$p" 2>/dev/null; done
  [ -n "$BG_PID" ] && kill -KILL "$BG_PID" 2>/dev/null
  rm -rf "$T"
}
trap 'cleanup; summary' EXIT
trap 'exit 1' INT TERM

# A 3-node cluster config on 127.0.0.1 (the ports are never opened by the stand-in).
python3 - "$T/three.json" "$T" <<'EOF'
import json, sys
path, t = sys.argv[1], sys.argv[2]
json.dump({
    "device": "cpu",
    "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": 1 + i} for i in range(3)]},
    "model": {"name": "mlp", "hidden": 16},
    "data": {"name": "synthetic", "synthetic_train": 960, "synthetic_test": 64, "batch_size": 16},
    "train": {"epochs": 1, "seed": 3, "threads": 1, "checkpoint": f"{t}/ck/x.ckpt"},
    "log": {"dir": f"{t}/logs", "every_steps": 5, "progress": False},
    # the process handling is under test here, not keys (curve: the nodes
    # would run log.dir/keys/config.json; test_cluster_ssh.sh covers keys)
    "net": {"security": "none"},
}, open(path, "w"), indent=1)
EOF

# The stand-in: `config` goes to the real binary; `train ... --node K ...`
# records its arguments, then (fake/fail-K present) prints lines and kills
# itself with SIGKILL, or runs until fake/stop exists or SIGTERM/SIGINT (exit 0).
mkdir -p "$T/fake"
cat > "$T/fake/tether" <<EOF
#!/usr/bin/env bash
[ "\$1" = train ] || exec "$TETHER_BIN" "\$@"
FAKE=$T/fake
EOF
cat >> "$T/fake/tether" <<'EOF'
id=""; prev=""
for a in "$@"; do [ "$prev" = --node ] && id=$a; prev=$a; done
printf '%s\n' "$*" >> "$FAKE/argv-$id"
echo $$ > "$FAKE/pid-$id"
echo "node $id up"
if [ -f "$FAKE/fail-$id" ]; then
  for i in 1 2 3 4 5 6 7; do echo "node $id line $i"; done
  echo "node $id: simulated fault" >&2
  kill -KILL $$
fi
trap 'echo "node $id: SIGTERM"; exit 0' TERM
trap 'echo "node $id: SIGINT"; exit 0' INT
while [ ! -f "$FAKE/stop" ]; do sleep 0.1; done
echo "node $id done"
EOF
chmod +x "$T/fake/tether"
export TETHER=$T/fake/tether

# --- 1. a failed node does not stop the others ------------------------------------
failure_keeps_others() {
  rm -f "$T"/fake/argv-* "$T"/fake/pid-* "$T/fake/stop"
  touch "$T/fake/fail-1"
  "$LOCAL" "$T/three.json" --set train.epochs=1 > "$T/run1.out" 2>&1 &
  BG_PID=$!
  # The report's last line (it is written in one piece).
  reported() { grep -q "restart 1 starts it again" "$T/run1.out"; }
  wait_for 60 reported || { cat "$T/run1.out"; return 1; }
  wait_for 20 test -s "$T/fake/pid-2" && wait_for 20 test -s "$T/fake/pid-0" || return 1
  cat "$T/run1.out"
  grep -q "^\[local-cluster\] node 1 failed: exit 137 (killed by SIGKILL); last lines of $T/logs/node-1.log:$" \
    "$T/run1.out" || return 1
  # The report names the last lines of its log, and how to restart it.
  grep -q "^\[local-cluster\]   node 1 line 7$" "$T/run1.out" || { echo "no last lines"; return 1; }
  # (stderr goes through its own filter: where its line lands among stdout's is not fixed)
  grep -q "^node 1: simulated fault$" "$T/logs/node-1.log" || { echo "no stderr line in the log"; return 1; }
  grep -q "restart 1 starts it again" "$T/run1.out" || return 1
  # The others and the script still run.
  kill -0 "$(cat "$T/fake/pid-0")" && kill -0 "$(cat "$T/fake/pid-2")" || { echo "a survivor was stopped"; return 1; }
  kill -0 "$BG_PID" || { echo "the script ended"; return 1; }
  grep -q "node [02] done" "$T/run1.out" && { echo "a survivor ended early"; return 1; }
  touch "$T/fake/stop"
  wait "$BG_PID"; local rc=$?; BG_PID=""
  cat "$T/run1.out"
  [ $rc -eq 1 ] || { echo "exit $rc, expected 1"; return 1; }
  grep -q "^\[node 0\] node 0 done$" "$T/run1.out" && grep -q "^\[node 2\] node 2 done$" "$T/run1.out" || return 1
  grep -q "^\[local-cluster\] failed: node 1 (exit 137)$" "$T/run1.out" || return 1
  # Each node's output in its log, the failed one's too.
  grep -q "^node 1 line 7$" "$T/logs/node-1.log" && grep -q "^node 0 done$" "$T/logs/node-0.log"
}
check "local-cluster: node 1 killed (SIGKILL) is reported at once, nodes 0 and 2 go on; exit 1 naming it" failure_keeps_others
rm -f "$T/fake/fail-1"

all_ok() {
  rm -f "$T"/fake/argv-*; touch "$T/fake/stop"
  local out; out=$("$LOCAL" "$T/three.json" 2>&1); local rc=$?
  echo "$out"
  [ $rc -eq 0 ] && grep -q "all nodes finished" <<< "$out" || return 1
  local i; for i in 0 1 2; do [ "$(cat "$T/fake/argv-$i")" = "train $T/three.json --node $i" ] || return 1; done
}
check "local-cluster: every node exits 0: exit 0, each started as train CONFIG --node ID" all_ok

# wait_nodes itself: a node that ended (and was reaped) before the wait began
# is reported at once, not when the next one ends (`wait -n` misses it).
early_end() {
  bash -c '
    source "$1/scripts/wait_nodes.sh"
    (exit 3) & a=$!
    sleep 30 & b=$!
    while kill -0 "$a" 2>/dev/null; do sleep 0.05; done   # reaped by the shell
    hook() { echo "hook $1 $2 after $((SECONDS - t0)) s"; [ "$1" = 0 ] && kill "$b"; }
    t0=$SECONDS
    NODE_EXIT_HOOK=hook wait_nodes "0 1" "$a" "$b"
    echo "failures: ${NODE_FAILURES[*]}"
  ' early "$SRC" > "$T/early.out" 2>&1
  cat "$T/early.out"
  grep -q "^hook 0 3 after [0-2] s$" "$T/early.out" && grep -q "^hook 1 143 " "$T/early.out" \
    && grep -q "^failures: node 0 (exit 3) node 1 (exit 143)$" "$T/early.out"
}
check "wait_nodes: a node that ended before the wait began is reported at once" early_end

# --- 2. restart -----------------------------------------------------------------------
restart_cmd() {
  rm -f "$T"/fake/argv-*; touch "$T/fake/stop"; rm -rf "$T/ck"
  local out rc
  out=$("$LOCAL" "$T/three.json" restart 1 --set train.epochs=2 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] || return 1
  [ "$(cat "$T/fake/argv-1")" = "train $T/three.json --node 1 --set train.epochs=2" ] || { cat "$T/fake/argv-1"; return 1; }
  [ ! -e "$T/fake/argv-0" ] && [ ! -e "$T/fake/argv-2" ] || { echo "another node was started"; return 1; }
  # Once node 1's checkpoint exists: --resume it.
  mkdir -p "$T/ck" && touch "$T/ck/x.node-1.ckpt" "$T/ck/x.ckpt"
  out=$("$LOCAL" "$T/three.json" restart 1 --set train.epochs=2 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] || return 1
  [ "$(tail -n 1 "$T/fake/argv-1")" = "train $T/three.json --node 1 --set train.epochs=2 --resume $T/ck/x.node-1.ckpt" ] \
    || { cat "$T/fake/argv-1"; return 1; }
  grep -q "restarting node 1: .* --resume $T/ck/x.node-1.ckpt" <<< "$out" || return 1
  grep -q "^--- restarted" "$T/logs/node-1.log" || return 1
  # An explicit --resume is left as given.
  "$LOCAL" "$T/three.json" restart 1 --resume "$T/ck/x.ckpt" > /dev/null 2>&1 || return 1
  [ "$(tail -n 1 "$T/fake/argv-1")" = "train $T/three.json --node 1 --resume $T/ck/x.ckpt" ] || { cat "$T/fake/argv-1"; return 1; }
}
check "restart 1: train CONFIG --node 1 ARGS, plus --resume x.node-1.ckpt once it exists" restart_cmd

restart_errors() {
  local out rc
  out=$("$LOCAL" "$T/three.json" restart 7 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 2 ] && grep -q 'no node "7" in' <<< "$out" || return 1
  out=$("$LOCAL" "$T/three.json" restart 2>&1); rc=$?
  [ $rc -eq 2 ] || return 1
  touch "$T/fake/fail-2"
  out=$("$LOCAL" "$T/three.json" restart 2 2>&1); rc=$?
  rm -f "$T/fake/fail-2"
  echo "$out"
  [ $rc -eq 1 ] && grep -q "node 2 failed: exit 137 (killed by SIGKILL)" <<< "$out" \
    && grep -q "^\[local-cluster\]   node 2 line 7$" <<< "$out"
}
check "restart: an unknown node or no NODE is exit 2; a restarted node that fails is exit 1 with its report" restart_errors

# --- 3. the real binary: checkpoints where checkpoint_path says --------------------------
real_checkpoints() {
  export TETHER=$TETHER_BIN
  python3 - "$T/two.json" "$T" <<'EOF'
import json, socket, sys
path, t = sys.argv[1], sys.argv[2]
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in socks]
for s in socks: s.close()
json.dump({
    "device": "cpu",
    "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": ports[i]} for i in range(2)]},
    "model": {"name": "mlp", "hidden": 8},
    "data": {"name": "synthetic", "synthetic_train": 128, "synthetic_test": 32, "batch_size": 16},
    "algorithm": {"name": "overlap", "staleness": 1, "period": 1, "mixer": "ring"},
    "train": {"epochs": 1, "seed": 3, "threads": 1, "checkpoint": "ck2/run.ckpt"},
    "log": {"dir": f"{t}/logs2", "every_steps": 2, "progress": False},
}, open(path, "w"), indent=1)
EOF
  local out rc
  out=$(cd "$T" && timeout 120 "$LOCAL" "$T/two.json" 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] || return 1
  source "$SRC/scripts/wait_nodes.sh"
  local i p; for i in 0 1; do
    p=$(checkpoint_path "$TETHER_BIN" "$T/two.json" "$i") || return 1
    echo "node $i: $p"
    [ "$p" = "ck2/run.node-$i.ckpt" ] && [ -s "$T/$p" ] || return 1
    [ -s "$T/logs2/node-$i.log" ] || return 1
  done
}
check "real 2-node run: checkpoints at checkpoint_path's paths, output in log.dir/node-<id>.log" real_checkpoints

# --- 4. resume: which checkpoints every node starts from ------------------------------
# (case 3's two.json and its checkpoints, ck2/run.node-{0,1}.ckpt under $T: one
# cut at the end of the run, step 4; the keyed config the nodes run)
resume_choice() {
  local keyed=$T/logs2/keys/config.json out rc i
  [ -s "$T/ck2/run.node-0.ckpt" ] && [ -s "$T/ck2/run.node-1.ckpt" ] && [ -f "$keyed" ] || { echo "case 3 left no checkpoints"; return 1; }
  # fake_resume: the stand-in nodes (they end at once), from $T as case 3 ran.
  fake_resume() {
    rm -f "$T"/fake/argv-*; touch "$T/fake/stop"
    out=$(cd "$T" && TETHER=$T/fake/tether "$LOCAL" "$T/two.json" resume --set log.every_steps=3 2>&1); rc=$?
    echo "$out"
  }
  argv_is() { [ "$(cat "$T/fake/argv-$1")" = "train $keyed --node $1 --set log.every_steps=3 --resume $2" ] || { cat "$T/fake/argv-$1"; return 1; }; }
  # One cut: each node its own.
  fake_resume
  [ $rc -eq 0 ] && grep -q "resume: every node from its own checkpoint, one cut (node 0: step 4, round 4 (a cut); node 1: step 4, round 4 (a cut))" <<< "$out" || return 1
  argv_is 0 ck2/run.node-0.ckpt && argv_is 1 ck2/run.node-1.ckpt || return 1
  grep -q "^--- resumed from ck2/run.node-1.ckpt" "$T/logs2/node-1.log" || { echo "no resume line in the log"; return 1; }
  # Steps differ (node 0 at step 2 of a shorter run, node 1 at step 4): both from node 1's.
  cp "$T/ck2/run.node-1.ckpt" "$T/keep-1.ckpt" || return 1
  out=$(cd "$T" && TETHER=$TETHER_BIN timeout 120 "$LOCAL" "$T/two.json" --set train.max_steps=2 2>&1) || { echo "$out"; return 1; }
  [ "$("$TETHER_BIN" checkpoint "$T/ck2/run.node-0.ckpt" --get step)" = 2 ] || return 1
  cp "$T/keep-1.ckpt" "$T/ck2/run.node-1.ckpt" || return 1
  fake_resume
  [ $rc -eq 0 ] && grep -q "resume: the checkpoints are not one cut (node 0: step 2, round 2 (a cut); node 1: step 4, round 4 (a cut)); every node starts from node 1's ck2/run.node-1.ckpt (step 4, the largest)" <<< "$out" || return 1
  argv_is 0 ck2/run.node-1.ckpt && argv_is 1 ck2/run.node-1.ckpt || return 1
  # Node 1 has none: both from node 0's.
  rm -f "$T/ck2/run.node-1.ckpt"
  fake_resume
  [ $rc -eq 0 ] && grep -q "not one cut (node 0: step 2, round 2 (a cut); node 1: none (ck2/run.node-1.ckpt)); every node starts from node 0's ck2/run.node-0.ckpt (step 2" <<< "$out" || return 1
  argv_is 0 ck2/run.node-0.ckpt && argv_is 1 ck2/run.node-0.ckpt || return 1
  # The real nodes: node 1 starts from node 0's parameters, both finish the run (4 steps), one model.
  out=$(cd "$T" && TETHER=$TETHER_BIN timeout 120 "$LOCAL" "$T/two.json" resume 2>&1); rc=$?
  echo "$out"
  [ $rc -eq 0 ] && grep -q "^\[node 1\] resumed from ck2/run.node-0.ckpt at step 2 (epoch 1): node 1 starts from node 0's parameters, momentum and anchor" <<< "$out" || return 1
  local h0 h1
  h0=$(grep -o "^\[node 0\] done: 4 steps, .*params_hash [0-9a-f]*" <<< "$out" | grep -o "params_hash [0-9a-f]*")
  h1=$(grep -o "^\[node 1\] done: 4 steps, .*params_hash [0-9a-f]*" <<< "$out" | grep -o "params_hash [0-9a-f]*")
  [ -n "$h0" ] && [ "$h0" = "$h1" ] || { echo "hashes: '$h0' '$h1'"; return 1; }
  for i in 0 1; do [ "$("$TETHER_BIN" checkpoint "$T/ck2/run.node-$i.ckpt" --get step)" = 4 ] || return 1; done
  # Checkpoints written at a failure are not a cut, even at one step: both from node 0's (the tie's lower id).
  out=$(cd "$T" && TETHER=$TETHER_BIN timeout 120 "$LOCAL" "$T/two.json" --fail-after-step 2 2>&1); rc=$?
  [ $rc -eq 1 ] || { echo "$out"; echo "exit $rc, expected 1"; return 1; }
  fake_resume
  [ $rc -eq 0 ] && grep -q "not one cut (node 0: step 2, round [0-9]* (written at a failure); node 1: step 2, round [0-9]* (written at a failure)); every node starts from node 0's" <<< "$out" || return 1
  argv_is 0 ck2/run.node-0.ckpt && argv_is 1 ck2/run.node-0.ckpt || return 1
  # Nothing to resume from, or a --resume given: exit 2.
  rm -f "$T"/ck2/run.node-*.ckpt
  fake_resume
  [ $rc -eq 2 ] && grep -q "resume: no checkpoint to resume from (node 0: none (ck2/run.node-0.ckpt); node 1: none" <<< "$out" || return 1
  out=$(cd "$T" && TETHER=$T/fake/tether "$LOCAL" "$T/two.json" resume --resume x.ckpt 2>&1); rc=$?
  [ $rc -eq 2 ] && grep -q "pass no --resume" <<< "$out"
}
check "resume: own checkpoints when one cut, else the largest step's for every node (real nodes finish), none: exit 2" resume_choice

[ $FAILED -eq 0 ]
