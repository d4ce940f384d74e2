#!/usr/bin/env bash
# Discrepancy against N: the seed's contrast. For N in --nodes (2, 4, 8, 16)
# and each algorithm -- overlap (s = 2), sync, local-sgd (H = 4), downpour
# (n_push = n_fetch = 1), easgd (tau = 4, alpha = 0.9/N) -- at the same
# per-node batch (64) and learning rate (0.02, no momentum), lenet on
# Fashion-MNIST with real gradients, every node's parameters are snapshotted
# at every round close and the exact pairwise distances computed from the
# snapshots (float64): the largest distance over the run and all pairs, a
# pair's maximum over the run (median over pairs), the median over pairs and
# rounds, and the growth of each from the smallest N to the largest. All
# nodes of a run share this machine, with a 5 ms injected delay per message.
# The work is bench/distance_growth.py --algorithms (see there).
#   bench/discrepancy.sh [--nodes 2,4,8,16] [--rounds 40] [--seeds 7] [--algorithms overlap,sync,...]
# Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/; SKIP_BUILD=1 skips the build).
# Ends with one line:
#   RESULT overlap_all_pairs=... overlap_per_pair=... overlap_median=... sync_... local_sgd_... downpour_... easgd_...
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
NODES=2,4,8,16 ROUNDS=40 SEEDS=7 ALGORITHMS=overlap,sync,local-sgd,downpour,easgd
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=$2; shift 2;; --rounds) ROUNDS=$2; shift 2;; --seeds) SEEDS=$2; shift 2;;
    --algorithms) ALGORITHMS=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
DATA=/usr/share/datasets/fashion-mnist
if [ "${SKIP_BUILD:-0}" != 1 ]; then build_tether; ensure_packages python3-numpy dataset-fashion-mnist; fi
[ -f "$DATA/train-images-idx3-ubyte.gz" ] || { echo "Fashion-MNIST not found under $DATA" >&2; exit 2; }
export BUILD_DIR
exec "${PYTHON:-/usr/bin/python3}" "$TETHER_ROOT/bench/distance_growth.py" --algorithms "$ALGORITHMS" \
  --nodes "$NODES" --rounds "$ROUNDS" --seeds "$SEEDS" --staleness 2 --model lenet --data fashion-mnist \
  --batch 64 --lr 0.02 --delay-ms 5 --local-period 4 --easgd-beta 0.9 --easgd-tau 4 --timeout-s 900
