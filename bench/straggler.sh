#!/usr/bin/env bash
# A slow node among four, with rounds every H steps and with rounds by time
# (algorithm.round_ms), against the same cluster without it: the fast nodes'
# images/s, idle and (--mode lenet) test accuracy at equal epochs.
#   bench/straggler.sh [--mode timed|lenet] [--runs 3] [--step-ms 40] [--steps 150]
#                      [--epochs 1] [--round-steps 2]
# What each mode measures and the RESULT line: bench/straggler.py's header.
# Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/; SKIP_BUILD=1 skips the build).
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
[ "${SKIP_BUILD:-0}" = 1 ] || build_tether
exec /usr/bin/python3 "$TETHER_ROOT/bench/straggler.py" "$@"
