#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: lenet on
# Fashion-MNIST on this machine, with a live progress line.
#   scripts/demo.sh [extra tether args, e.g. --set train.epochs=3]
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
build_tether
cd "$TETHER_ROOT"
log "training lenet on Fashion-MNIST (configs/fmnist-lenet.json)"
"$BUILD_DIR/tether" train configs/fmnist-lenet.json "$@"
log "metrics: runs/fmnist-lenet/node-0.jsonl"
tail -n 1 runs/fmnist-lenet/node-0.jsonl
