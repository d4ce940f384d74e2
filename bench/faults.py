#!/usr/bin/python3
"""What a failure costs the survivors: kill -9 of one node of 4, and its rejoin.

Four nodes on 127.0.0.1 train lenet (ring, s = 2, H = 1) on Fashion-MNIST
(or synthetic data with --data synthetic). Each run: the cluster trains; at
--kill-at seconds node 2 is killed with SIGKILL; --restart-after seconds later
it is started again with the same command. Measured from the nodes' metrics
records (JSONL) and the wall clock of the kill and the restart:

  detect+change  kill -> the survivors' view record (the round after it runs
                 in the new view): peer_timeout_ms plus the view change
  rejoin         restart -> the restarted node's view record (joined: x̄ is
                 here and its first round runs)
  transfer       bytes of x̄ streamed to it, against the parameter size
  lost_s         survivors' progress in the 10 s after the kill, as seconds
                 lost against their own rate before it (steps/s of node 0)
  images/s       survivors (node 0) before the kill and after the view change

The peer here is the same cluster without the failure in the same run: its
steps/s is the reference of lost_s and is printed beside it.

usage: bench/faults.py [--runs 3] [--steps 900] [--kill-at 12] [--restart-after 5] [--data fashion-mnist]
Uses $BUILD_DIR/tether (BUILD_DIR defaults to build/). Ends with one line:
  RESULT detect_s=... rejoin_s=... transfer_ratio=... lost_s=... (medians over runs)
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from bench_util import free_ports, records, tether_binary, write_config  # noqa: E402






def config(a, logdir, ports):
    data = {"name": "synthetic", "synthetic_train": 32 * 4 * a.steps, "synthetic_test": 64, "batch_size": 32}
    if a.data != "synthetic":
        data = {"name": a.data, "batch_size": 32}
    return {
        "device": "cpu",
        "model": {"name": "lenet"},
        "data": data,
        "optimizer": {"lr": 0.02, "momentum": 0.9},
        "train": {"epochs": 1, "seed": 1, "threads": 1, "max_steps": a.steps, "eval_every_epochs": 0},
        "algorithm": {"name": "overlap", "staleness": 2, "period": 1},
        "net": {"heartbeat_ms": 100},
        "log": {"dir": logdir, "every_steps": 10, "progress": False},
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(ports)]},
    }


def run(binary, workdir, tag, a, fail):
    logdir = os.path.join(workdir, tag)
    shutil.rmtree(logdir, ignore_errors=True)
    os.makedirs(logdir)
    cfg_path = os.path.join(workdir, tag + ".json")
    write_config(binary, config(a, logdir, free_ports(4)), cfg_path)
    def start(i, suffix=""):
        out = open(os.path.join(logdir, f"node{i}{suffix}.out"), "w")
        return subprocess.Popen([binary, "train", cfg_path, "--node", str(i)], stdout=out, stderr=subprocess.STDOUT)
    procs = [start(i) for i in range(4)]
    t0 = time.time()
    kill_t = restart_t = None
    deadline = t0 + 600
    while time.time() < deadline:   # bounded: 10 minutes
        if all(p.poll() is not None for p in procs):
            break
        now = time.time()
        if fail and kill_t is None and now - t0 >= a.kill_at:
            procs[2].send_signal(signal.SIGKILL)
            procs[2].wait()
            kill_t = time.time()
        if fail and kill_t is not None and restart_t is None and now - kill_t >= a.restart_after:
            procs[2] = start(2, "-again")
            restart_t = time.time()
        time.sleep(0.05)
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    codes = [p.returncode for p in procs]
    if any(c != 0 for c in codes):
        sys.exit(f"{tag}: a node failed (exit codes {codes}); see {logdir}")
    return logdir, kill_t, restart_t


def rate(recs, t_from, t_to):
    """node's steps/s between two wall times, from its periodic records"""
    pts = [(r["time"], r["step"]) for r in recs if "event" not in r and t_from <= r["time"] <= t_to]
    if len(pts) < 2:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--kill-at", type=float, default=12.0)
    ap.add_argument("--restart-after", type=float, default=5.0)
    ap.add_argument("--data", default="fashion-mnist")
    a = ap.parse_args()
    binary = tether_binary()
    workdir = tempfile.mkdtemp(prefix="tether-faults-")
    rows = []
    for k in range(a.runs):
        clean, _, _ = run(binary, workdir, f"clean{k}", a, False)
        c0 = records(clean, 0)
        ref_rate = rate(c0, c0[0]["time"], c0[-1]["time"])
        logdir, kill_t, restart_t = run(binary, workdir, f"fault{k}", a, True)
        if kill_t is None or restart_t is None:
            sys.exit("the run ended before the kill or the restart: raise --steps")
        r0 = records(logdir, 0)
        views0 = [r for r in r0 if r.get("event") == "view"]
        joined = [r for r in records(logdir, 2) if r.get("event") == "view"]
        if not views0 or not joined:
            sys.exit(f"no view records in {logdir}")
        detect = views0[0]["time"] - kill_t
        rejoin = joined[-1]["time"] - restart_t
        with open(os.path.join(logdir, "node0.out")) as f:   # "...: N trainable parameters, M averaged buffers"
            m = re.search(r"(\d+) trainable parameters, (\d+) averaged buffers", f.read())
        param_bytes = 4 * (int(m.group(1)) + int(m.group(2))) if m else float("nan")
        before = rate(r0, kill_t - 8, kill_t)
        after = rate(r0, views0[0]["time"], views0[0]["time"] + 8)
        window = rate(r0, kill_t, kill_t + 10)
        lost = 10.0 - (window * 10.0 / before) if window and before else float("nan")
        ips = lambda s: s * 32 if s else float("nan")
        row = {"detect_s": detect, "change_ms": views0[0]["ms"], "rejoin_s": rejoin,
               "transfer_bytes": joined[-1]["transferred_bytes"], "transfer_ratio": joined[-1]["transferred_bytes"] / param_bytes,
               "lost_s": lost,
               "ips_before": ips(before), "ips_after": ips(after), "ips_clean": ips(ref_rate)}
        rows.append(row)
        print(f"run {k}: kill -> view 2 {detect:.2f} s (change {row['change_ms']:.1f} ms); restart -> joined {rejoin:.2f} s, "
              f"{row['transfer_bytes']} bytes of x̄ ({row['transfer_ratio']:.2f}x the parameters); survivors lost {lost:.2f} s of the 10 s after the kill; "
              f"node 0 images/s {row['ips_before']:.0f} before, {row['ips_after']:.0f} after (clean run {row['ips_clean']:.0f})",
              flush=True)
    med = lambda key: statistics.median(r[key] for r in rows)
    print(f"RESULT detect_s={med('detect_s'):.2f} change_ms={med('change_ms'):.1f} rejoin_s={med('rejoin_s'):.2f} "
          f"transfer_ratio={med('transfer_ratio'):.2f} lost_s={med('lost_s'):.2f} ips_before={med('ips_before'):.0f} "
          f"ips_after={med('ips_after'):.0f} ips_clean={med('ips_clean'):.0f} (medians of {a.runs} runs; "
          f"max detect_s={max(r['detect_s'] for r in rows):.2f})")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
