#!/usr/bin/env bash
# What a failure costs: kill -9 of one node of 4 mid-run and its restart
# (bench/faults.py: detection + view change, rejoin, bytes streamed, images/s
# before and after, seconds the survivors lose). Builds first if needed.
#   bench/faults.sh [--runs 3] [--steps 900] [--data fashion-mnist|synthetic]
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
build_tether
exec /usr/bin/python3 "$TETHER_ROOT/bench/faults.py" "$@"
