# shellcheck shell=bash
# Shared set-up for scripts/*.sh: install what is missing (Debian 12), then
# configure and build into build/. Source it; do not run it.
set -euo pipefail

TETHER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$TETHER_ROOT/build}

# Packages the build and the tests need.
TETHER_PACKAGES=(meson ninja-build pkg-config g++ zlib1g-dev nlohmann-json3-dev doctest-dev
                 libdnnl-dev libopenblas-dev libzmq3-dev cppzmq-dev libboost-dev libcli11-dev
                 dataset-fashion-mnist python3 python3-dev pybind11-dev python3-numpy python3-torch
                 clang libclang-rt-14-dev libfuzzer-14-dev)  # the fuzz harnesses (build_fuzz)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ensure_packages PKG... : apt-get installs the ones not installed yet.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${missing[*]}" >&2; return 1; }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# build_tether: meson setup (once) + compile. Extra args go to meson setup.
build_tether() {
  ensure_packages "${TETHER_PACKAGES[@]}"
  if [ ! -f "$BUILD_DIR/build.ninja" ]; then
    log "configuring $BUILD_DIR"
    meson setup "$BUILD_DIR" "$TETHER_ROOT" "$@" >/dev/null
  fi
  log "building (ninja -C $BUILD_DIR)"
  ninja -C "$BUILD_DIR" >/dev/null || ninja -C "$BUILD_DIR"
}

# build_fuzz: the libFuzzer harnesses of test/fuzz/ (clang, ASan + UBSan) in
# their own build directory, FUZZ_DIR (default build-fuzz/); ccache when present.
build_fuzz() {
  FUZZ_DIR=${FUZZ_DIR:-$TETHER_ROOT/build-fuzz}
  ensure_packages "${TETHER_PACKAGES[@]}"
  if [ ! -f "$FUZZ_DIR/build.ninja" ]; then
    log "configuring $FUZZ_DIR (clang, libFuzzer, AddressSanitizer, UBSan)"
    local cxx=clang++
    command -v ccache >/dev/null && cxx="ccache clang++"
    CXX="$cxx" meson setup "$FUZZ_DIR" "$TETHER_ROOT" -Dfuzz=enabled -Dbuildtype=debugoptimized >/dev/null
  fi
  log "building the fuzz harnesses (ninja -C $FUZZ_DIR)"
  ninja -C "$FUZZ_DIR" >/dev/null || ninja -C "$FUZZ_DIR"
}

# ---- The emulated switch (scripts/switch.sh) for the benchmarks of bench/
# (bench/switch.sh, bench/pytorch.sh). Its names follow TETHER_SWITCH_PREFIX
# (default "tether": tether-ns<i>, tether-n<i>), so that two benchmarks on one
# machine can each have a switch of their own.
SWITCH_SH=$TETHER_ROOT/scripts/switch.sh
SWITCH_PREFIX=${TETHER_SWITCH_PREFIX:-tether}
PEERS=${PEERS:-$TETHER_ROOT/../shared/peers}   # the peer scripts (ddp_rank.py)

# switch_check: fails, saying why, unless network namespaces can be made here.
switch_check() {
  if ! ip netns add "$SWITCH_PREFIX-probe$$" 2>/dev/null; then
    echo "the emulated switch needs root (or CAP_NET_ADMIN) and iproute2" >&2; return 2
  fi
  ip netns del "$SWITCH_PREFIX-probe$$"
}
# switch_up N RATE: this prefix's switch. Fails if one is up already: it may
# be another run's, so it is not taken down here (TETHER_SWITCH_PREFIX picks
# other names).
switch_up() { "$SWITCH_SH" up "$1" "$2" >/dev/null; }
# switch_down: takes this prefix's switch down with every process inside it;
# quiet, idempotent (for EXIT traps).
switch_down() { "$SWITCH_SH" down >/dev/null 2>&1 || true; }
# switch_host I: node I's address (switch.sh: 10.77.0.<I+1>, whatever the prefix).
switch_host() { echo "10.77.0.$(($1 + 1))"; }

# on_switch N TIMEOUT_S LOG CMD...: CMD once per node i = 0..N-1 inside the
# namespace <prefix>-ns<i>, with "{i}" in its arguments replaced by i and
# "{if}" by the node's interface <prefix>-n<i>; each bounded by TIMEOUT_S
# (timeout: TERM, KILL 10 s later); node i's output goes to LOG.<i>. When a
# node fails the others are stopped (a rank waiting for a dead peer would sit
# out its time-out). Fails naming the nodes that failed, with their last lines.
on_switch() {
  local n=$1 limit=$2 log=$3 i arg rc failed=() pids=() args=() left
  shift 3
  for ((i = 0; i < n; i++)); do   # i over the switch's ports
    args=()
    for arg in "$@"; do arg=${arg//\{i\}/$i}; args+=("${arg//\{if\}/$SWITCH_PREFIX-n$i}"); done
    ip netns exec "$SWITCH_PREFIX-ns$i" timeout -k 10 "$limit" "${args[@]}" > "$log.$i" 2>&1 &
    pids+=($!)
  done
  # Polled, every process bounded by its timeout: ends within TIMEOUT_S + 10 s.
  left=$n
  while [ "$left" -gt 0 ]; do
    left=0
    for ((i = 0; i < n; i++)); do
      [ -n "${pids[$i]}" ] || continue
      if kill -0 "${pids[$i]}" 2>/dev/null; then left=$((left + 1)); continue; fi
      rc=0; wait "${pids[$i]}" 2>/dev/null || rc=$?
      pids[i]=""
      if [ "$rc" -ne 0 ]; then
        failed+=("node $i (exit $rc)")
        for arg in "${pids[@]}"; do [ -z "$arg" ] || kill -TERM "$arg" 2>/dev/null || true; done
      fi
    done
    [ "$left" -eq 0 ] || sleep 0.2
  done
  [ ${#failed[@]} -eq 0 ] && return 0
  echo "on the switch: failed: ${failed[*]}" >&2
  for ((i = 0; i < n; i++)); do tail -n 5 "$log.$i" | sed "s/^/  [node $i] /" >&2; done
  return 1
}

# ddp_on_switch N STEPS WARMUP PORT LOG THREADS BATCH: PyTorch DDP (gloo), the
# peers' ddp_rank.py, one rank per node of the switch: lenet ("cnn"), SGD
# lr 0.05 momentum 0.9, random 28x28 data, STEPS timed steps after WARMUP;
# sets DDP_IPS to the images/s of all ranks together (rank 0's RESULT line).
# (A variable, not output: in a $(...) subshell a signal to the script would
# wait for the whole run.)
ddp_on_switch() {
  local n=$1 steps=$2 warmup=$3 port=$4 log=$5 threads=$6 batch=$7
  DDP_IPS=""
  [ -f "$PEERS/ddp_rank.py" ] || { echo "no $PEERS/ddp_rank.py (set PEERS=)" >&2; return 2; }
  # OpenBLAS (torch's BLAS on Debian) at THREADS too: torch.set_num_threads
  # does not reach it (python/tether/__init__.py, "Threads")
  on_switch "$n" $((120 + 10 * (steps + warmup))) "$log" env OPENBLAS_NUM_THREADS="$threads" \
    /usr/bin/python3 "$PEERS/ddp_rank.py" --world "$n" \
    --rank '{i}' --master "$(switch_host 0)" --ifname '{if}' --port "$port" --threads "$threads" \
    --model cnn --batch "$batch" --warmup "$warmup" --steps "$steps" || return 1
  DDP_IPS=$(sed -n 's/^RESULT ddp .* total=\([0-9.]*\) img\/s.*/\1/p' "$log.0")
  [ -n "$DDP_IPS" ] || { echo "ddp_rank.py: no RESULT line in $log.0" >&2; return 1; }
}

# The tether rows of bench/switch.sh and bench/pytorch.sh, by name: the
# --set overrides each applies to the benchmark's config, and its label. A row
# the config refuses (`tether config` fails) is skipped, saying why. Add a
# row here and name it in --rows.
declare -A SWITCH_ROW_SETS=(
  [sync]="algorithm.name=sync algorithm.staleness=0 algorithm.period=1 net.compression=none"
  [none]="algorithm.name=overlap algorithm.staleness=2 algorithm.period=1 net.compression=none"
  [bf16]="algorithm.name=overlap algorithm.staleness=2 algorithm.period=1 net.compression=bf16"
  [int8]="algorithm.name=overlap algorithm.staleness=2 algorithm.period=1 net.compression=int8"
  [auto]="algorithm.name=overlap algorithm.staleness=2 algorithm.period=auto net.compression=none"
  [auto8]="algorithm.name=overlap algorithm.staleness=2 algorithm.period=auto net.compression=int8"
)
# shellcheck disable=SC2034  # read by the benchmarks that source this file
declare -A SWITCH_ROW_LABEL=(
  [ddp]="PyTorch DDP (gloo)" [sync]="sync s=0 H=1" [none]="overlap s=2 H=1 none" [bf16]="overlap s=2 H=1 bf16"
  [int8]="overlap s=2 H=1 int8" [auto]="overlap s=2 H=auto none" [auto8]="overlap s=2 H=auto int8"
)
# switch_row_args ROW: the row's overrides as tether arguments (--set k=v ...),
# one a line; fails for an unknown row.
switch_row_args() {
  local kv
  [ -n "${SWITCH_ROW_SETS[$1]:-}" ] || return 1
  for kv in ${SWITCH_ROW_SETS[$1]}; do printf -- '--set\n%s\n' "$kv"; done
}

# switch_bench_header: the machine and commit lines a switch benchmark starts with.
switch_bench_header() {
  echo "# machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# commit: $(git -C "$TETHER_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown); switch prefix $SWITCH_PREFIX"
}

# switch_rows_accepted CONFIG RESULTS ROW...: prints, one a line, the rows
# CONFIG takes with the row's overrides (ddp always); a refused row is
# skipped, saying why on stderr and with a {"row": ..., "skipped": true} line
# in RESULTS.
switch_rows_accepted() {
  local cfg=$1 results=$2 row err sets
  shift 2
  for row in "$@"; do
    if [ "$row" != ddp ]; then
      mapfile -t sets < <(switch_row_args "$row")
      if ! err=$("$TETHER" config "$cfg" "${sets[@]}" 2>&1 >/dev/null); then
        echo "row $row (${SWITCH_ROW_LABEL[$row]}) skipped: tether config refuses ${SWITCH_ROW_SETS[$row]}: $err" >&2
        echo "{\"row\": \"$row\", \"skipped\": true}" >> "$results"
        continue
      fi
    fi
    echo "$row"
  done
}

# switch_bench_config OUT N BATCH LR MOMENTUM SEED EPOCHS MAX_STEPS LOGDIR SECURITY:
# the benchmarks' base config: lenet on Fashion-MNIST, N nodes at the switch's
# addresses (port 5550), 1 thread each, a metrics record every 20 steps,
# time-outs for a loaded machine; the rows' overrides go on top.
switch_bench_config() {
  python3 - "$@" <<'PY'
import json, sys
out, n, batch, lr, mom, seed, epochs, max_steps, logdir, security = sys.argv[1:11]
cfg = {
    "model": {"name": "lenet"},
    "data": {"name": "fashion-mnist", "batch_size": int(batch)},
    "optimizer": {"name": "sgd", "lr": float(lr), "momentum": float(mom)},
    "algorithm": {"name": "overlap", "staleness": 2, "period": 1, "mixer": "ring"},
    "train": {"epochs": int(epochs), "max_steps": int(max_steps), "seed": int(seed), "threads": 1},
    "log": {"dir": logdir, "every_steps": 20, "progress": False},
    "net": {"connect_timeout_ms": 60000, "peer_timeout_ms": 10000, "security": security},
    "cluster": {"peers": [{"id": i, "host": f"10.77.0.{i + 1}", "port": 5550} for i in range(int(n))]},
}
json.dump(cfg, open(out, "w"), indent=1)
PY
}
