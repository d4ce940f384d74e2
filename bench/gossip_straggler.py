#!/usr/bin/python3
"""Gossip with one slow node (issue 16): the fast nodes' idle fraction when
every gossip round waits for every node's sketch (the global barrier gossip
had before; the hidden flag --gossip-barrier brings it back) against rounds
that complete with the partner's exchange alone (the default).

N nodes (default 8) on 127.0.0.1, mixer gossip (hypercube for N = 8), s = 2,
H = 1, 1 thread each; node --slow-node sleeps --slow-ms more after every step
(train.extra_step_ms). Two modes:

  lenet   real lenet steps (batch 16, synthetic data): on a shared 2-core
          machine 8 processes contend for the cores, so steps are uneven.
  timed   train.compute = synthetic: every step sleeps --step-ms (no CPU),
          so the fast nodes' steps take the same time whatever the load.

Both variants run with the same binary, config and seed, alternating, --runs
times each (--barrier-binary PATH: the barrier variant runs that build instead,
without the flag, e.g. a build of the commit before issue 16); each run checks that every node ends with the same params_hash
(the closing exact average). Reported per variant (medians over runs): the
fast nodes' idle_frac_total (mean over them), the slow node's, and the run's
wall time; then the ratio barrier / no barrier of the fast nodes' idle.

What to expect: a gossip round needs its partner's snapshot, whose own round
needed its partners' before, so no node runs more than s + 1 rounds plus one
schedule period (log2 N) ahead of the slowest: with a node slow at every
step, every node ends up at its pace either way, and the barrier costs only
what it adds on top (each round waits for the last sketch of all N, so any
node's hiccup stalls everyone at once). Without it, the lead the fast nodes
may take absorbs a slow node's pauses of up to a few rounds.

usage: bench/gossip_straggler.py [--mode lenet|timed] [--nodes 8] [--runs 3] [--steps 200]
                                 [--slow-node 7] [--slow-ms 20] [--step-ms 10] [--staleness 2]
                                 [--barrier-binary PATH]
Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/). Ends with one line:
  RESULT mode=... nodes=... slow_ms=... idle_fast_barrier=... idle_fast=... ratio=... wall_barrier=... wall=...
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_util import final_record, free_ports, fresh_dir, small_run_config, tether_binary, wait_nodes, write_config  # noqa: E402


def run_cluster(binary, workdir, tag, a, barrier, flag=True):
    logdir = fresh_dir(workdir, tag)
    cfg = {
        **small_run_config(a.mode, a.nodes, a.steps, a.step_ms, logdir),
        "net": {"connect_timeout_ms": 30000, "peer_timeout_ms": 10000, "shutdown_timeout_ms": 5000,
                "security": "none"},
        "algorithm": {"name": "overlap", "staleness": a.staleness, "period": 1, "mixer": "gossip"},
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(free_ports(a.nodes))]},
    }
    path = os.path.join(logdir, "config.json")
    write_config(binary, cfg, path)
    procs = []
    t0 = time.monotonic()
    for i in range(a.nodes):
        cmd = [binary, "train", path, "--node", str(i)]
        if i == a.slow_node:
            cmd += ["--set", f"train.extra_step_ms={a.slow_ms}"]
        if barrier and flag:
            cmd.append("--gossip-barrier")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    wait_nodes(procs, tag, 900)
    wall = time.monotonic() - t0
    finals = [final_record(logdir, i) for i in range(a.nodes)]
    hashes = {f.get("params_hash") for f in finals}
    if len(hashes) != 1 or None in hashes:
        sys.exit(f"{tag}: the nodes did not end with one model: {hashes}")   # correctness in the same run
    fast = [f["idle_frac_total"] for i, f in enumerate(finals) if i != a.slow_node]
    return {"idle_fast": statistics.mean(fast), "idle_fast_max": max(fast),
            "idle_slow": finals[a.slow_node]["idle_frac_total"], "wall": wall,
            "age": max(f.get("sketch_age_rounds_max", 0) for f in finals)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["lenet", "timed"], default="lenet")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--slow-node", type=int, default=7)
    ap.add_argument("--slow-ms", type=float, default=20.0, help="the slow node's extra sleep per step")
    ap.add_argument("--step-ms", type=float, default=10.0, help="timed mode: every step's sleep")
    ap.add_argument("--staleness", type=int, default=2)
    ap.add_argument("--barrier-binary", default="", help="run the barrier variant with this build (no flag)")
    a = ap.parse_args()
    if not 0 <= a.slow_node < a.nodes:
        sys.exit(f"--slow-node {a.slow_node}: expected 0..{a.nodes - 1}")
    binary = tether_binary()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                            text=True).stdout.strip()
    if a.barrier_binary and not os.access(a.barrier_binary, os.X_OK):
        sys.exit(f"--barrier-binary {a.barrier_binary}: not an executable")
    print(f"tether {binary} at {commit}" + (f" (barrier: {a.barrier_binary})" if a.barrier_binary else "") +
          f"; {os.cpu_count()} cores; mode {a.mode}, N = {a.nodes}, s = {a.staleness}, "
          f"{a.steps} steps, node {a.slow_node} +{a.slow_ms} ms per step", flush=True)
    work = tempfile.mkdtemp(prefix="tether-straggler-")
    rows = {True: [], False: []}
    for run in range(a.runs):
        for barrier in (True, False) if run % 2 == 0 else (False, True):   # alternate which goes first
            tag = f"{'barrier' if barrier else 'free'}{run}"
            if barrier and a.barrier_binary:
                r = run_cluster(a.barrier_binary, work, tag, a, True, flag=False)
            else:
                r = run_cluster(binary, work, tag, a, barrier)
            rows[barrier].append(r)
            print(f"run {run} {'barrier   ' if barrier else 'no barrier'}: fast nodes idle {r['idle_fast']:.3f} "
                  f"(max {r['idle_fast_max']:.3f}), slow node idle {r['idle_slow']:.3f}, wall {r['wall']:.1f} s, "
                  f"oldest sketch {r['age']} rounds", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    med = {b: {k: statistics.median(r[k] for r in rows[b]) for k in ("idle_fast", "idle_slow", "wall")}
           for b in (True, False)}
    print(f"RESULT mode={a.mode} nodes={a.nodes} slow_ms={a.slow_ms} runs={a.runs} "
          f"idle_fast_barrier={med[True]['idle_fast']:.4f} idle_fast={med[False]['idle_fast']:.4f} "
          f"ratio={med[True]['idle_fast'] / max(med[False]['idle_fast'], 1e-4):.2f} "
          f"wall_barrier={med[True]['wall']:.1f} wall={med[False]['wall']:.1f}")


if __name__ == "__main__":
    main()
