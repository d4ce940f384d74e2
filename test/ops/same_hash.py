#!/usr/bin/env python3
"""same_hash.py LOGDIR NODES: every node's last "final" record in
LOGDIR/node-<i>.jsonl carries the same, non-empty params_hash (exit 1 if not).
Shared by the operations tests (test_cluster_ssh.sh, test_switch.sh)."""
import json, sys

log_dir, nodes = sys.argv[1], int(sys.argv[2])
hashes = []
for i in range(nodes):
    with open(f"{log_dir}/node-{i}.jsonl") as f:
        final = [r for r in map(json.loads, f) if r.get("event") == "final"]
    assert final, f"node {i}: no final event"
    hashes.append(final[-1].get("params_hash"))
print(hashes)
assert hashes[0] and len(set(hashes)) == 1, "params_hash differs"
