#!/usr/bin/python3
"""Chaos: 6 nodes train lenet on Fashion-MNIST while a script kills -9 a random
node every 10-20 s (never more than 2 down at once) and starts it again 3-8 s
later (the same command, with --resume of its checkpoint when it has one). No
kill comes once a node has passed 80 % of the clean run's steps, so that
every killed node is back before the run ends.

Checks, and prints (exit 1 when one fails):
  - at least --min-kills kills happened;
  - no node ever exits non-zero (a killed node is killed, not failed; every
    life of a node, first or restarted, exits 0 or is killed by the script);
  - every node ends with the same params_hash;
  - test accuracy within --tolerance points of the same run without faults
    (run first, same seed).
Bounded: every run has a deadline (--deadline-s); the kill schedule's seed is
printed (--seed to replay it).

usage: bench/chaos.py [--nodes 6] [--epochs 3] [--seed S] [--min-kills 8] [--data fashion-mnist]
Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/). Ends with one line:
  RESULT kills=... acc_clean=... acc_chaos=... delta_points=... equal=yes|no
"""
import argparse, json, os, random, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_util import final_record, free_ports, records, tether_binary, write_config  # noqa: E402




def progress(logdir, nodes):
    """The largest step any node has recorded so far."""
    step = 0
    for i in range(nodes):
        for r in records(logdir, i):
            step = max(step, int(r.get("step", 0) or 0))
    return step


def run(binary, workdir, tag, a, chaos, last_kill_step=None):
    logdir = os.path.join(workdir, tag)
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    data = {"name": a.data, "batch_size": 32}
    if a.data == "synthetic":
        data = {"name": "synthetic", "synthetic_train": 32 * a.nodes * 300, "synthetic_test": 512, "batch_size": 32}
    cfg = {
        "device": "cpu",
        "model": {"name": "lenet"},
        "data": data,
        "optimizer": {"lr": 0.02, "momentum": 0.9},
        "train": {"epochs": a.epochs, "seed": 1, "threads": 1},
        "algorithm": {"name": "overlap", "staleness": 2, "period": 1},
        "net": {"heartbeat_ms": 100, "quorum_wait_ms": 60000},
        "log": {"dir": logdir, "every_steps": 20, "progress": False},
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(free_ports(a.nodes))]},
    }
    cfg_path = os.path.join(workdir, tag + ".json")
    write_config(binary, cfg, cfg_path)
    lives = {i: 0 for i in range(a.nodes)}

    def start(i):
        lives[i] += 1
        args = [binary, "train", cfg_path, "--node", str(i)]
        ckpt = os.path.join(logdir, f"node-{i}.ckpt")
        if lives[i] > 1 and os.path.exists(ckpt):
            args += ["--resume", ckpt]
        out = open(os.path.join(logdir, f"node{i}-life{lives[i]}.out"), "w")
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    procs = {i: start(i) for i in range(a.nodes)}
    rng = random.Random(a.seed)
    t0 = time.time()
    next_kill = t0 + rng.uniform(10, 20)
    down = {}   # node -> time to start it again
    kills, failures = 0, []
    while time.time() - t0 < a.deadline_s:   # bounded by the deadline
        now = time.time()
        for i, p in list(procs.items()):
            if p is not None and p.poll() is not None:
                if p.returncode != 0:
                    failures.append(f"node {i} life {lives[i]} exited {p.returncode}")
                procs[i] = None
        if all(p is None for p in procs.values()) and not down:
            break
        if chaos and now >= next_kill and last_kill_step is not None and progress(logdir, a.nodes) >= last_kill_step:
            chaos = False   # the run is near its end: a node killed now might not be back before it
            print(f"  t={now - t0:6.1f} s: no more kills (step {last_kill_step} reached)", flush=True)
        if chaos and now >= next_kill:
            alive = [i for i, p in procs.items() if p is not None]
            if len(down) < 2 and len(alive) == a.nodes - len(down) and alive:
                victim = rng.choice(alive)
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = None
                down[victim] = now + rng.uniform(3, 8)
                kills += 1
                print(f"  t={now - t0:6.1f} s: kill -9 node {victim} (kill {kills})", flush=True)
            next_kill = now + rng.uniform(10, 20)
        for i, at in list(down.items()):
            if now >= at:
                del down[i]
                if all(p is None for p in procs.values()):
                    continue   # the run is over
                procs[i] = start(i)
                print(f"  t={now - t0:6.1f} s: node {i} started again (life {lives[i]})", flush=True)
        time.sleep(0.05)
    timed_out = any(p is not None and p.poll() is None for p in procs.values())
    for p in procs.values():
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
    finals = [final_record(logdir, i) for i in range(a.nodes)]
    return {"kills": kills, "failures": failures, "timed_out": timed_out, "finals": finals,
            "wall_s": time.time() - t0, "logdir": logdir}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--min-kills", type=int, default=8)
    ap.add_argument("--tolerance", type=float, default=1.0)
    ap.add_argument("--deadline-s", type=float, default=3600)
    ap.add_argument("--data", default="fashion-mnist")
    a = ap.parse_args()
    binary = tether_binary()
    print(f"kill schedule seed {a.seed} (--seed {a.seed} replays it)", flush=True)
    workdir = tempfile.mkdtemp(prefix="tether-chaos-")
    clean = run(binary, workdir, "clean", a, False)
    print(f"clean run: {clean['wall_s']:.0f} s", flush=True)
    # No kill so late that the run could end before the node is back (a restart
    # 3-8 s later, then its join): none once a node has passed 80 % of the
    # clean run's steps (time is no guide: with nodes down, the others run
    # faster on a shared machine).
    last_kill_step = int(0.8 * int(clean["finals"][0].get("steps", 0) or 0))
    chaos = run(binary, workdir, "chaos", a, True, last_kill_step)
    print(f"chaos run: {chaos['wall_s']:.0f} s, {chaos['kills']} kills", flush=True)
    ok = True
    for r, name in ((clean, "clean"), (chaos, "chaos")):
        if r["failures"] or r["timed_out"]:
            print(f"{name}: failures {r['failures']}, timed out {r['timed_out']} (logs in {r['logdir']})")
            ok = False
    hashes = {f.get("params_hash") for f in chaos["finals"]}
    equal = len(hashes) == 1 and None not in hashes
    acc_clean = clean["finals"][0].get("test_acc") or float("nan")
    acc_chaos = chaos["finals"][0].get("test_acc") or float("nan")
    delta = 100 * (acc_chaos - acc_clean)
    ok = ok and equal and chaos["kills"] >= a.min_kills and abs(delta) <= a.tolerance
    print(f"RESULT kills={chaos['kills']} acc_clean={100 * acc_clean:.2f} acc_chaos={100 * acc_chaos:.2f} "
          f"delta_points={delta:+.2f} equal={'yes' if equal else 'no'} seed={a.seed} {'PASS' if ok else 'FAIL'}")
    if ok:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
