#!/usr/bin/env bash
# bench/net/allreduce_bench on loopback, both what it runs: tether's ring and
# the plain-TCP reference ring (--reference tcp, bench/net/tcp_ring.h). Every
# run checks every element of every node's result against the closed-form
# mean (wrong=0) and exits non-zero otherwise, so these cases hold each ring
# to a reference computed another way:
#   - the reference for N = 1, 2, 3, 5 with a size that no chunk or segment
#     divides, and for fewer elements than nodes (empty segments)
#   - tether's ring through the same harness
#   - bad arguments: exit 2 naming them
# Bounded: small sizes, 2 iterations, a time-out per run.
set -uo pipefail
SRC=${TETHER_SOURCE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TETHER_BUILD_ROOT:-$SRC/build}
BENCH=$BUILD/bench/net/allreduce_bench

CASES=0 PASSED=0 FAILED=0
summary() { echo "[doctest] test cases: $CASES | $PASSED passed | $FAILED failed | 0 skipped"; }
ok() { CASES=$((CASES + 1)); PASSED=$((PASSED + 1)); echo "ok    $1"; }
bad() { CASES=$((CASES + 1)); FAILED=$((FAILED + 1)); echo "FAIL  $1"; }
trap summary EXIT

[ -x "$BENCH" ] || { bad "allreduce_bench at $BENCH"; exit 1; }

# correct NAME ARGS...: the run exits 0 and reports wrong=0 on its result line
correct() {
  local name=$1; shift
  local out rc
  out=$(timeout 120 "$BENCH" --iters 2 --warmup 1 "$@" 2>&1); rc=$?
  if [ $rc -eq 0 ] && echo "$out" | grep -Eq '^(TCPRING|TETHER) .* wrong=0 '; then ok "$name"
  else bad "$name"; echo "      (exit $rc)"; printf '%s\n' "$out" | tail -n 10 | sed 's/^/      | /'; fi
}
# refused NAME PATTERN ARGS...: exit 2 and PATTERN in the output
refused() {
  local name=$1 pattern=$2; shift 2
  local out rc
  out=$(timeout 60 "$BENCH" "$@" 2>&1); rc=$?
  if [ $rc -eq 2 ] && echo "$out" | grep -q -- "$pattern"; then ok "$name"
  else bad "$name"; echo "      (exit $rc)"; printf '%s\n' "$out" | tail -n 5 | sed 's/^/      | /'; fi
}

for n in 1 2 3 5; do
  correct "tcp reference, $n nodes, 1000003 floats in 64 KB chunks" \
    --reference tcp --nodes $n --numel 1000003 --chunk-bytes 65536
done
correct "tcp reference, 5 nodes, 3 floats (empty segments)" --reference tcp --nodes 5 --numel 3
correct "tether's ring, 3 nodes, 100003 floats in 64 KB chunks" --nodes 3 --numel 100003 --chunk-bytes 65536
refused "an unknown reference" "the only reference is tcp" --reference udp
refused "the tcp reference with --curve" "no --curve" --reference tcp --curve
exit $((FAILED > 0))
