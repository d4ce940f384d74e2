#!/usr/bin/python3
"""Idle time of overlap (s = 2) against tether's own sync (s = 0) when a merge
costs about 80% of a step: what staleness exists to hide.

Two nodes on 127.0.0.1, ring, H = 1. A ring merge of N = 2 is two hops, each
delayed by the transport's injected delay (net.inject_delay_ms). Two modes:

  timed   train.compute = synthetic: every step sleeps --step-ms and applies a
          random update, so both nodes' steps take the same time whatever the
          machine's load; the delay is 0.4 of a step per hop (merge 80%).
  lenet   real lenet steps on synthetic data; the step time is measured first
          under the same load (s = 2, no delay), then the delay is set to 0.4
          of it per hop. A busy machine makes the two nodes' steps uneven, so
          the calibration run's own idle (load imbalance, not merge cost) is
          reported beside the others.

Each run reports idle_frac_total (the fraction of wall time a node waited on
the network; the highest node for s = 2, the lowest for sync). Moved here from
the test suite: it measures speed, which a shared 2-core machine cannot
promise, so it is a benchmark, not a test.

usage: bench/idle_overlap.py [--mode timed|lenet] [--runs 3] [--step-ms 30] [--steps 150]
Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/). Ends with one line:
  RESULT mode=... idle_sync=... idle_s2=... ratio=...   (medians over runs)
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_util import final_record, free_ports, fresh_dir, small_run_config, tether_binary, wait_nodes, write_config  # noqa: E402




def run_cluster(binary, workdir, tag, a, staleness, delay_ms):
    logdir = fresh_dir(workdir, tag)
    cfg = {
        **small_run_config(a.mode, 2, a.steps, a.step_ms, logdir),
        "net": {"connect_timeout_ms": 20000, "inject_delay_ms": delay_ms, "peer_timeout_ms": 10000,
                "shutdown_timeout_ms": 2000},
        "algorithm": {"name": "sync" if staleness == 0 else "overlap", "staleness": staleness, "period": 1,
                      "mixer": "ring"},
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(free_ports(2))]},
    }
    path = os.path.join(logdir, "config.json")
    write_config(binary, cfg, path)
    procs = [subprocess.Popen([binary, "train", path, "--node", str(i)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    wait_nodes(procs, tag, 600)
    finals = [final_record(logdir, i) for i in range(2)]
    hashes = {f.get("params_hash") for f in finals}
    if len(hashes) != 1:
        sys.exit(f"{tag}: the nodes ended with different models {hashes}")   # correctness in the same run
    return finals


def step_ms(finals):
    """Non-idle wall time per step (compute + the algorithm's own host work), slowest node."""
    return max(f["wall_s"] * (1 - f["idle_frac_total"]) / max(1, f["steps"]) * 1000 for f in finals)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["timed", "lenet"], default="timed")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--step-ms", type=float, default=30.0, help="timed mode: the step's sleep")
    ap.add_argument("--steps", type=int, default=150)
    a = ap.parse_args()
    binary = os.path.join(os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")), "tether")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary} not found: build first (scripts/test.sh or ninja -C build)")
    work = tempfile.mkdtemp(prefix="tether-idle-")
    rows = []
    for run in range(a.runs):
        cal_idle = 0.0
        if a.mode == "timed":
            delay = 0.4 * a.step_ms
        else:
            cal = run_cluster(binary, work, f"cal{run}", a, 2, 0.0)
            cal_idle = max(f["idle_frac_total"] for f in cal)
            delay = 0.4 * step_ms(cal)
        sync = run_cluster(binary, work, f"sync{run}", a, 0, delay)
        over = run_cluster(binary, work, f"s2-{run}", a, 2, delay)
        idle_sync = min(f["idle_frac_total"] for f in sync)
        idle_over = max(f["idle_frac_total"] for f in over)
        rows.append((idle_sync, idle_over))
        print(f"run {run}: delay {delay:.1f} ms per hop (merge ~{2 * delay:.1f} ms); idle sync {idle_sync:.3f}, "
              f"s=2 {idle_over:.3f}" + (f", calibration run {cal_idle:.3f}" if a.mode == "lenet" else ""), flush=True)
    ms = statistics.median(r[0] for r in rows)
    mo = statistics.median(r[1] for r in rows)
    shutil.rmtree(work, ignore_errors=True)
    print(f"RESULT mode={a.mode} runs={a.runs} idle_sync={ms:.4f} idle_s2={mo:.4f} "
          f"ratio={ms / max(mo, 1e-4):.1f}")


if __name__ == "__main__":
    main()
