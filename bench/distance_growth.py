#!/usr/bin/python3
"""How the largest pairwise distance between nodes grows from N = 2 to N = 8.

Runs the configuration of the cluster bound test (test/runtime/test_cluster.cpp:
mlp on synthetic data, ring, H = 1, lr 0.02, a 10 ms injected delay per ring hop
so that every node keeps its staleness window full) for N = 2 and N = 8, for
each staleness s and seed, with parameter snapshots at every round close, and
computes exact distances from the snapshots (float64):

  all_pairs  max over rounds of max over the N(N-1)/2 pairs   (the largest distance)
  per_pair   max over rounds for each pair, then the median over pairs
             (N = 2 has one pair: both figures are that pair's maximum)
  median     median over every pair and round

and prints each one's growth N=8 / N=2. s = 0 is the control: no rounds in
flight, so whatever growth it shows comes from taking the maximum over 28
pairs instead of 1, not from staleness.

usage: bench/distance_growth.py [--staleness 2,0] [--seeds 7,8,9] [--rounds 120]
         [--train-samples 5120] [--batch 64] [--bound auto|DIST] [--model lenet --data fashion-mnist]
Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/). Ends with one line:
  RESULT s2_all_pairs=... s2_per_pair=... s0_all_pairs=... ...   (medians over seeds)

With --algorithms (bench/discrepancy.sh) it compares algorithms instead of
staleness values, at the same per-node batch and learning rate and the same
injected delay, over every N of --nodes: overlap (s = --staleness, H = 1),
sync, local-sgd (H = --local-period), downpour (n_push = n_fetch = 1) and
easgd (tau = --easgd-tau, alpha = --easgd-beta / N as Zhang et al. advise).
Snapshots are taken at every round close (every step; every H steps for
local-sgd), and growth is from the smallest N to the largest:
  RESULT overlap_all_pairs=... overlap_per_pair=... overlap_median=... downpour_all_pairs=... ...
"""
import argparse, itertools, json, os, shutil, socket, statistics, struct, subprocess, sys, tempfile, time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_util import free_ports, records, tether_binary, write_config  # noqa: E402




def algorithm_config(name, n, s, a):
    """The algorithm section of a run: name one of ALGORITHMS, or None for the
    legacy staleness mode (overlap, staleness s)."""
    if name is None or name == "overlap":
        return {"name": "overlap", "staleness": s, "period": 1, "mixer": "ring"}
    if name == "sync":
        return {"name": "sync", "period": 1}
    if name == "local-sgd":
        return {"name": "local-sgd", "period": a.local_period}
    if name == "downpour":
        return {"name": "downpour", "n_push": 1, "n_fetch": 1}
    if name == "easgd":
        return {"name": "easgd", "alpha": min(0.5, a.easgd_beta / n), "tau": a.easgd_tau}
    sys.exit(f"unknown algorithm {name} (expected one of {', '.join(ALGORITHMS)})")


ALGORITHMS = ["overlap", "sync", "local-sgd", "downpour", "easgd"]


def run_cluster(binary, workdir, n, s, seed, a, algorithm=None):
    logdir = os.path.join(workdir, f"{algorithm or 's' + str(s)}-seed{seed}-n{n}")
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    cfg = {
        "device": "cpu",
        "model": {"name": "mlp", "hidden": a.hidden} if a.model == "mlp" else {"name": a.model},
        "data": ({"name": "synthetic", "synthetic_train": a.train_samples, "synthetic_test": 64, "batch_size": a.batch}
                 if a.data == "synthetic" else {"name": a.data, "batch_size": a.batch,
                                                **({"path": a.data_path} if a.data_path else {})}),
        "optimizer": {"lr": a.lr, "momentum": 0.0, "weight_decay": 0.0},
        "train": {"epochs": 1000, "seed": seed, "threads": 1, "max_steps": a.rounds},
        "log": {"every_steps": 10, "progress": False, "dir": logdir},
        "net": {"connect_timeout_ms": 20000, "inject_delay_ms": a.delay_ms, "peer_timeout_ms": 10000,
                "shutdown_timeout_ms": 2000},
        "algorithm": algorithm_config(algorithm, n, s, a),
        "monitor": {"bound": a.bound if a.bound == "auto" else float(a.bound), "sketch_buckets": 256, "snapshots": True},
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(free_ports(n))]},
    }
    path = os.path.join(logdir, "config.json")
    write_config(binary, cfg, path)
    procs = [subprocess.Popen([binary, "train", path, "--node", str(i)], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(logdir, f"node{i}.err"), "w")) for i in range(n)]
    deadline = time.time() + a.timeout_s
    for i, p in enumerate(procs):
        try:
            code = p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            sys.exit(f"N={n} {algorithm or f's={s}'} seed={seed}: timed out after {a.timeout_s} s (logs in {logdir})")
        if code != 0:
            sys.exit(f"N={n} {algorithm or f's={s}'} seed={seed}: node {i} exited {code}: "
                     + open(os.path.join(logdir, f"node{i}.err")).read()[-500:])
    return logdir


def pair_distances(logdir, n):
    """[{(i, j): exact distance}] for every round all n nodes snapshotted."""
    rounds = []
    for r in itertools.count():
        xs = []
        for i in range(n):
            path = os.path.join(logdir, "snapshots", f"node{i}-r{r}.bin")
            if not os.path.exists(path):
                return rounds
            with open(path, "rb") as f:
                raw = f.read()
            rnd, dim = struct.unpack("<QQ", raw[:16])
            if rnd != r or len(raw) != 24 + 4 * dim:
                sys.exit(f"{path}: malformed snapshot (round {rnd}, dim {dim}, {len(raw)} bytes)")
            xs.append(np.frombuffer(raw, dtype=np.float32, offset=24).astype(np.float64))
        rounds.append({(i, j): float(np.linalg.norm(xs[i] - xs[j])) for i, j in itertools.combinations(range(n), 2)})


def summary(rounds):
    pairs = rounds[0].keys()
    per_pair = [max(r[p] for r in rounds) for p in pairs]
    return {"all_pairs": max(per_pair), "per_pair": statistics.median(per_pair),
            "median": statistics.median(d for r in rounds for d in r.values()), "rounds": len(rounds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--staleness", default="2,0")
    ap.add_argument("--seeds", default="7,8,9")
    ap.add_argument("--rounds", type=int, default=120)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train-samples", type=int, default=5120)
    ap.add_argument("--model", default="mlp", help="mlp (with --hidden units) or another model of the zoo, e.g. lenet")
    ap.add_argument("--data", default="synthetic", help="synthetic (--train-samples), or e.g. fashion-mnist (--data-path)")
    ap.add_argument("--data-path", default="", help="directory of the data set (default: the data set's own)")
    ap.add_argument("--bound", default="auto", help="monitor.bound: auto, or a distance the monitor holds")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--delay-ms", type=int, default=10)
    ap.add_argument("--timeout-s", type=int, default=300)
    ap.add_argument("--algorithms", default="", help="compare these (of " + ",".join(ALGORITHMS) + ") instead of staleness values")
    ap.add_argument("--nodes", default="2,8", help="cluster sizes of --algorithms")
    ap.add_argument("--local-period", type=int, default=4, help="H of local-sgd")
    ap.add_argument("--easgd-beta", type=float, default=0.9, help="easgd: alpha = beta / N")
    ap.add_argument("--easgd-tau", type=int, default=4)
    ap.add_argument("--json", default="", help="--algorithms: write every run's figures here (the input of "
                    "`tether report --chart`, see --chart-out)")
    ap.add_argument("--chart-out", default="", help="--algorithms: with --json, the chart spec of distance against N "
                    "(`tether report --chart SPEC -o FILE.svg` draws it)")
    a = ap.parse_args()
    binary = os.path.join(os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")), "tether")
    if not os.access(binary, os.X_OK):
        sys.exit(f"{binary}: not built (meson setup build && ninja -C build)")
    seeds = [int(x) for x in a.seeds.split(",")]
    stalenesses = [int(x) for x in a.staleness.split(",")]
    a.commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
    print(f"# commit {a.commit}, "
          f"{os.cpu_count()} cores; {a.model if a.model != 'mlp' else f'mlp hidden {a.hidden}'} on {a.data}, bound {a.bound}, batch {a.batch}, lr {a.lr}, H 1, {a.rounds} rounds, "
          f"delay {a.delay_ms} ms/hop", flush=True)
    if a.algorithms:
        compare_algorithms(binary, a)
        return
    growth = {}
    with tempfile.TemporaryDirectory(prefix="tether-growth-") as work:
        for s in stalenesses:
            for seed in seeds:
                res = {n: summary(pair_distances(run_cluster(binary, work, n, s, seed, a), n)) for n in (2, 8)}
                for n in (2, 8):
                    if res[n]["rounds"] != a.rounds:
                        sys.exit(f"s={s} seed={seed} N={n}: {res[n]['rounds']} rounds snapshotted, expected {a.rounds}")
                g = {k: res[8][k] / res[2][k] for k in ("all_pairs", "per_pair", "median")}
                for k, v in g.items():
                    growth.setdefault((s, k), []).append(v)
                print(f"s={s} seed={seed}: largest distance {res[2]['all_pairs']:.4f} -> {res[8]['all_pairs']:.4f} "
                      f"x{g['all_pairs']:.3f} | per pair x{g['per_pair']:.3f} | median x{g['median']:.3f}", flush=True)
    print("RESULT " + " ".join(f"s{s}_{k}={statistics.median(v):.3f}" for (s, k), v in growth.items()))


def compare_algorithms(binary, a):
    names = a.algorithms.split(",")
    nodes = [int(x) for x in a.nodes.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    s = int(a.staleness.split(",")[0])
    lo, hi = min(nodes), max(nodes)
    print(f"# algorithms {', '.join(names)}; overlap s={s}, local-sgd H={a.local_period}, "
          f"easgd alpha={a.easgd_beta}/N tau={a.easgd_tau}; N in {nodes}; seeds {seeds}", flush=True)
    print(f"{'algorithm':<10} {'N':>3} {'rounds':>6} {'largest':>10} {'pair max, median':>17} {'median pair':>12} {'s/run':>6}",
          flush=True)
    growth = {}
    runs = []   # one entry per (algorithm, seed, N): what --json keeps
    with tempfile.TemporaryDirectory(prefix="tether-discrepancy-") as work:
        for name in names:
            period = a.local_period if name == "local-sgd" else 1
            for seed in seeds:
                res = {}
                for n in nodes:
                    t0 = time.time()
                    logdir = run_cluster(binary, work, n, s, seed, a, name)
                    res[n] = summary(pair_distances(logdir, n))
                    shutil.rmtree(os.path.join(logdir, "snapshots"), ignore_errors=True)   # lenet: 240 kB a snapshot
                    if res[n]["rounds"] != a.rounds // period:
                        sys.exit(f"{name} seed={seed} N={n}: {res[n]['rounds']} rounds snapshotted, "
                                 f"expected {a.rounds // period}")
                    runs.append({"algorithm": name, "seed": seed, "n": n, "seconds": time.time() - t0, **res[n]})
                    print(f"{name:<10} {n:>3} {res[n]['rounds']:>6} {res[n]['all_pairs']:>10.4f} "
                          f"{res[n]['per_pair']:>17.4f} {res[n]['median']:>12.4f} {time.time() - t0:>6.1f}", flush=True)
                for k in ("all_pairs", "per_pair", "median"):
                    growth.setdefault((name, k), []).append(res[hi][k] / res[lo][k])
            print(f"{name}: growth N={lo} -> {hi}: largest x{statistics.median(growth[(name, 'all_pairs')]):.2f}, "
                  f"a pair's maximum (median pair) x{statistics.median(growth[(name, 'per_pair')]):.2f}, "
                  f"median x{statistics.median(growth[(name, 'median')]):.2f}", flush=True)
    if a.json:
        write_json(a, names, nodes, seeds, runs)
    print("RESULT " + " ".join(f"{name.replace('-', '_')}_{k}={statistics.median(v):.3f}"
                               for (name, k), v in growth.items()))


def write_json(a, names, nodes, seeds, runs):
    """--json: every run's figures and the settings; with --chart-out, the chart
    of distance against N (median over seeds): per algorithm one solid line
    (the largest distance) and one dashed (the median pair distance)."""
    commit = a.commit   # the checkout's commit when the runs began
    doc = {"commit": commit, "date": time.strftime("%Y-%m-%d", time.gmtime()), "cores": os.cpu_count(),
           "model": a.model, "data": a.data, "batch": a.batch, "lr": a.lr, "rounds": a.rounds,
           "delay_ms": a.delay_ms, "nodes": nodes, "seeds": seeds, "algorithms": names, "runs": runs}
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
    if not a.chart_out:
        return
    series = []
    for name in names:
        for key, label, dashed in (("all_pairs", "largest", False), ("median", "median pair", True)):
            pts = [[n, statistics.median(r[key] for r in runs if r["algorithm"] == name and r["n"] == n)]
                   for n in nodes]
            series.append({"name": f"{name} {label}", "group": name, "dashed": dashed, "points": pts})
    chart = {"title": f"Distance between nodes against N ({a.model}, {a.data}, {a.rounds} steps, commit {commit})",
             "xlabel": "nodes N (log scale)", "ylabel": "distance (L2)", "log_x": True, "series": series}
    with open(a.chart_out, "w") as f:
        json.dump(chart, f, indent=1)


if __name__ == "__main__":
    main()
