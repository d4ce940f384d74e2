#!/usr/bin/python3
"""A slow node among four: what it costs the others with rounds every H steps
and with rounds by time (algorithm.round_ms), against the same cluster
without it. Called by bench/straggler.sh.

Four nodes on 127.0.0.1, ring, overlap (s = 2). Node 3 is slowed to half
speed with train.extra_step_ms (a sleep after each step, as long as a step).
Four runs per repetition, in this order:

  ref         no slow node, a round every step (H = 1)
  steps       node 3 at half speed, a round every step (H = 1)
  ref_time    no slow node, a round every --round-steps fast steps' time
              (algorithm.round_ms)
  round_ms    node 3 at half speed, round_ms as in ref_time

Each slowed run is compared with the run of the same rounds without the slow
node (steps against ref, round_ms against ref_time).

Two modes:

  timed   train.compute = synthetic: every step sleeps --step-ms and applies
          a random update of lenet's size, so the steps take the same time
          whatever the machine's load (this machine has 2 cores for 4 nodes):
          the speed figures.
  lenet   lenet on Fashion-MNIST for --epochs epochs, 1 thread per node; the
          slow node's extra sleep is the reference run's measured step time.
          Test accuracy at equal epochs (the fast nodes' epochs; the slow node
          trains about half its shard before the run ends). Speed figures
          here also carry the CPU the slow node leaves free while it sleeps.

Per run: images/s of the three fast nodes (each node's median over its
interval records, the first and the last left out; summed), the slow node's,
the fast nodes' idle fraction, test accuracy (lenet). Prints a table per
repetition and ends with the medians over --runs:

  RESULT mode=... steps_keep=... round_ms_keep=... [acc_ref=... acc_round_ms=... acc_diff=...]

keep = the fast nodes' images/s over those of the same rounds without the
slow node (target with round_ms: >= 0.90); acc_diff in points, round_ms
against ref (target: within 0.5).
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_util import free_ports, fresh_dir, records, tether_binary, wait_nodes, write_config  # noqa: E402

NODES, SLOW = 4, 3


def run(binary, work, tag, a, seed, slow_extra_ms, round_ms):
    """Runs the 4 nodes to the end; returns each node's (final record, interval records)."""
    logdir = fresh_dir(work, tag)
    timed = a.mode == "timed"
    train = {"epochs": a.epochs, "seed": seed, "threads": 1}
    if timed:
        train.update({"compute": "synthetic", "synthetic_step_ms": a.step_ms, "max_steps": a.steps, "epochs": 50})
    algorithm = {"name": "overlap", "staleness": 2, "period": 1, "mixer": "ring"}
    if round_ms:
        algorithm["round_ms"] = int(round_ms)
    cfg = {
        "device": "cpu",
        "model": {"name": "lenet"},
        "data": {"name": "fashion-mnist", "batch_size": 64},
        "optimizer": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "train": train,
        "log": {"every_steps": 10, "progress": False, "dir": logdir},
        "net": {"connect_timeout_ms": 30000, "peer_timeout_ms": 10000, "shutdown_timeout_ms": 5000},
        "algorithm": algorithm,
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(free_ports(NODES))]},
    }
    path = os.path.join(logdir, "config.json")
    write_config(binary, cfg, path)
    procs = []
    for i in range(NODES):
        extra = ["--set", f"train.extra_step_ms={slow_extra_ms}"] if i == SLOW and slow_extra_ms > 0 else []
        procs.append(subprocess.Popen([binary, "train", path, "--node", str(i)] + extra, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))
    wait_nodes(procs, tag, a.timeout)
    out = []
    for i in range(NODES):
        recs = records(logdir, i)
        final = [r for r in recs if r.get("event") == "final"]
        if not final:
            sys.exit(f"{tag}: node {i} wrote no final record")
        out.append((final[-1], [r for r in recs if "event" not in r and "images_per_s" in r]))
    hashes = {f.get("params_hash") for f, _ in out}
    if len(hashes) != 1:
        sys.exit(f"{tag}: the nodes ended with different models {hashes}")   # correctness in the same run
    return out


def node_ips(intervals):
    """A node's steady images/s: the median of its interval records, the first and the last left out."""
    vals = [r["images_per_s"] for r in intervals]
    vals = vals[1:-1] if len(vals) > 2 else vals
    return statistics.median(vals) if vals else 0.0


def summary(nodes):
    fast = [i for i in range(NODES) if i != SLOW]
    return {
        "fast_ips": sum(node_ips(nodes[i][1]) for i in fast),
        "slow_ips": node_ips(nodes[SLOW][1]),
        "fast_idle": max(nodes[i][0].get("idle_frac_total", 0.0) for i in fast),
        "slow_steps": nodes[SLOW][0].get("steps", 0),
        "fast_steps": max(nodes[i][0].get("steps", 0) for i in fast),
        "acc": nodes[0][0].get("test_acc"),
    }


def step_ms(nodes):
    """Non-idle wall time per step (compute and the algorithm's own work), the slowest node."""
    return max(f["wall_s"] * (1 - f.get("idle_frac_total", 0.0)) / max(1, f["steps"]) * 1000 for f, _ in nodes)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["timed", "lenet"], default="timed")
    ap.add_argument("--runs", type=int, default=3, help="repetitions (lenet: seeds 1..runs)")
    ap.add_argument("--step-ms", type=float, default=40.0, help="timed: the step's sleep")
    ap.add_argument("--steps", type=int, default=150, help="timed: steps per node")
    ap.add_argument("--epochs", type=int, default=1, help="lenet: epochs")
    ap.add_argument("--round-steps", type=float, default=2.0, help="round_ms as this many fast steps' time")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    a = ap.parse_args()
    binary = tether_binary()
    work = tempfile.mkdtemp(prefix="tether-straggler-")
    rows = []
    try:
        for k in range(a.runs):
            seed = k + 1
            ref = run(binary, work, f"ref{k}", a, seed, 0, 0)
            step = a.step_ms if a.mode == "timed" else step_ms(ref)
            round_ms = max(1, round(a.round_steps * step))
            steps = run(binary, work, f"steps{k}", a, seed, step, 0)
            ref_time = run(binary, work, f"reftime{k}", a, seed, 0, round_ms)
            timed = run(binary, work, f"time{k}", a, seed, step, round_ms)
            r = {"ref": summary(ref), "steps": summary(steps), "ref_time": summary(ref_time),
                 "round_ms": summary(timed), "step_ms": step, "round": round_ms}
            rows.append(r)
            print(f"run {k + 1} (seed {seed}): step {step:.1f} ms, node {SLOW} +{step:.1f} ms per step, "
                  f"round_ms {round_ms}")
            print(f"  {'run':<10} {'fast img/s':>10} {'keep':>6} {'fast idle':>9} {'slow img/s':>10} "
                  f"{'slow steps':>10} {'fast steps':>10} {'test acc':>8}")
            for name, base in (("ref", "ref"), ("steps", "ref"), ("ref_time", "ref_time"), ("round_ms", "ref_time")):
                s = r[name]
                keep = s["fast_ips"] / max(1e-9, r[base]["fast_ips"])
                acc = "-" if s["acc"] is None else f"{100 * s['acc']:.2f}"
                print(f"  {name:<10} {s['fast_ips']:>10.1f} {keep:>6.3f} {s['fast_idle']:>9.3f} "
                      f"{s['slow_ips']:>10.1f} {s['slow_steps']:>10} {s['fast_steps']:>10} {acc:>8}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(f):
        return statistics.median(f(r) for r in rows)

    keep_steps = med(lambda r: r["steps"]["fast_ips"] / r["ref"]["fast_ips"])
    keep_time = med(lambda r: r["round_ms"]["fast_ips"] / r["ref_time"]["fast_ips"])
    idle_time = med(lambda r: r["round_ms"]["fast_idle"])
    line = (f"RESULT mode={a.mode} runs={a.runs} steps_keep={keep_steps:.3f} round_ms_keep={keep_time:.3f} "
            f"round_ms_fast_idle={idle_time:.4f}")
    verdict = f"target round_ms_keep >= 0.90: {'met' if keep_time >= 0.90 else 'NOT met'}"
    if a.mode == "lenet":
        acc_ref = med(lambda r: r["ref"]["acc"] or 0.0) * 100
        acc_time = med(lambda r: r["round_ms"]["acc"] or 0.0) * 100
        acc_steps = med(lambda r: r["steps"]["acc"] or 0.0) * 100
        line += (f" acc_ref={acc_ref:.2f} acc_steps={acc_steps:.2f} acc_round_ms={acc_time:.2f} "
                 f"acc_diff={acc_time - acc_ref:+.2f}")
        verdict += f"; accuracy within 0.5 points: {'met' if abs(acc_time - acc_ref) <= 0.5 else 'NOT met'}"
    print(line)
    print(verdict)


if __name__ == "__main__":
    main()
