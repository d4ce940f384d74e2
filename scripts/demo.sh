#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: four tether nodes
# on this machine training lenet on Fashion-MNIST together over ZeroMQ
# (configs/local-4.json: overlap averaging, staleness 2, a round every 4
# local steps, ring all-reduce).
# Ends with `tether dashboard --once` of the run: each node's steps, test
# accuracy, idle fraction and largest pairwise parameter distance against the
# bound.
#   scripts/demo.sh [extra tether args, e.g. --set train.epochs=2]
#   CONFIG=configs/fmnist-lenet.json scripts/demo.sh    # one node instead
# The config is read by `tether config` only (log.dir, with the same --set).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
CONFIG=${CONFIG:-configs/local-4.json}
build_tether
cd "$TETHER_ROOT"
source "$TETHER_ROOT/scripts/wait_nodes.sh"   # split_sets
TETHER=${TETHER:-$BUILD_DIR/tether}
split_sets "$@"
LOG_DIR=$("$TETHER" config "$CONFIG" "${SETS[@]}" --get log.dir)
rm -f "$LOG_DIR"/node-*.jsonl
log "training with $CONFIG (metrics in $LOG_DIR/)"
set +e
TETHER=$TETHER scripts/local-cluster.sh "$CONFIG" "$@"
rc=$?
"$TETHER" dashboard "$LOG_DIR" --once
set -e
exit $rc
