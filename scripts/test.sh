#!/usr/bin/env bash
# Installs what is missing, builds, runs every test. Ends with the line
# "N passed, N failed" (test cases, summed over all test programs) and exits
# non-zero on any failure.
#   scripts/test.sh [meson test args, e.g. a suite name]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
build_tether
log "running tests"
cd "$BUILD_DIR"
set +e
# One test program at a time: multi-process tests fork real nodes, and CI has 2 cores.
meson test --no-rebuild --num-processes 1 --print-errorlogs "$@"
set -e
python3 "$TETHER_ROOT/scripts/test_summary.py" "$BUILD_DIR/meson-logs/testlog.json"
