"""Helpers shared by the Python benchmarks of bench/: ports, the tether binary,
and the nodes' metrics records."""
import json, os, shutil, socket, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tether_binary():
    """$BUILD_DIR/tether (BUILD_DIR defaults to build/); exits naming it when missing."""
    binary = os.path.join(os.environ.get("BUILD_DIR", os.path.join(ROOT, "build")), "tether")
    if not os.access(binary, os.X_OK):
        sys.exit(f"no tether binary at {binary}: build first (scripts/test.sh or ninja -C build)")
    return binary


def records(logdir, node):
    """Every JSON record of node's metrics file, in order (torn lines skipped)."""
    out = []
    path = os.path.join(logdir, f"node-{node}.jsonl")
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def final_record(logdir, node):
    """node's last {"event": "final"} record ({} when it has none yet)."""
    recs = [r for r in records(logdir, node) if r.get("event") == "final"]
    return recs[-1] if recs else {}


def fresh_dir(workdir, tag):
    """workdir/tag, emptied (a run's log directory)."""
    d = os.path.join(workdir, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def small_run_config(mode, nodes, steps, step_ms, logdir):
    """The idle benchmarks' node config without net, algorithm and cluster:
    mode "timed" (an mlp whose step is a step_ms sleep) or "lenet" (real
    lenet steps), synthetic data, batch 16, one thread, steps per node."""
    timed = mode == "timed"
    return {
        "device": "cpu",
        "model": {"name": "mlp", "hidden": 16} if timed else {"name": "lenet"},
        "data": {"name": "synthetic", "synthetic_train": 16 * nodes * 400, "synthetic_test": 64, "batch_size": 16},
        "optimizer": {"lr": 0.01, "momentum": 0.0},
        "train": {"epochs": 20, "seed": 7, "threads": 1, "max_steps": steps,
                  **({"compute": "synthetic", "synthetic_step_ms": step_ms} if timed else {})},
        "log": {"every_steps": 50, "progress": False, "dir": logdir},
    }


def write_config(binary, cfg, path):
    """Writes cfg (a dict) to path; a cluster config with net.security "curve"
    (the default) and peers without a public_key gets CURVE keys first: a
    keypair per node in <path's directory>/keys (`tether keygen --config`),
    the public keys and net.secret_key_file filled in."""
    with open(path, "w") as f:
        json.dump(cfg, f)
    peers = (cfg.get("cluster") or {}).get("peers") or []
    if (cfg.get("net") or {}).get("security", "curve") != "curve" or not peers or all("public_key" in p for p in peers):
        return
    keyed = subprocess.run([binary, "keygen", "--config", path, "--out", os.path.join(os.path.dirname(path), "keys")],
                           check=True, stdout=subprocess.PIPE, text=True).stdout
    with open(path, "w") as f:
        f.write(keyed)


def wait_nodes(procs, tag, timeout_s):
    """Waits for every node process (stderr piped, text); on a time-out kills
    them all, and exits naming the run when one ends non-zero."""
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            sys.exit(f"{tag}: a node did not finish within {timeout_s} s")
        if p.returncode != 0:
            sys.exit(f"{tag}: a node exited {p.returncode}: {err[-2000:]}")


def steady_images_per_s(recs):
    """One node's training images/s at steady state: the mean of its periodic
    records' images_per_s, the first (start-up) and the last (a partial
    window) left out, as bench/paper.sh computes it; None without records."""
    ips = [r["images_per_s"] for r in recs if "event" not in r and r.get("images_per_s") is not None]
    steady = ips[1:-1] if len(ips) > 2 else ips
    return sum(steady) / len(steady) if steady else None


def steady_idle_frac(recs):
    """One node's idle fraction at steady state: the mean of its periodic
    records' idle_frac over the windows steady_images_per_s keeps (start-up
    and the final drain left out); None without records."""
    idle = [r["idle_frac"] for r in recs if "event" not in r and r.get("images_per_s") is not None
            and r.get("idle_frac") is not None]
    steady = idle[1:-1] if len(idle) > 2 else idle
    return sum(steady) / len(steady) if steady else None


def run_summary(logdir, nodes):
    """A cluster run's figures from its metrics files (node-<id>.jsonl,
    id 0..nodes-1), written by `tether train` or by tether.Averager alike:
      ips       images/s summed over the nodes, each at steady state
      idle      idle_frac_total of the final records, mean over the nodes
      idle_steady  steady_idle_frac, mean over the nodes
      acc       node 0's test accuracy: its last final or eval record with one
      same_hash every node's final record has the same params_hash
      bytes_per_step  bytes sent per step per node, mean over the nodes
      missing   the nodes without a final record (a run that did not finish)"""
    ips, idle, steady, hashes, bps, missing, acc = 0.0, [], [], set(), [], [], None
    for node in range(nodes):
        recs = records(logdir, node)
        finals = [r for r in recs if r.get("event") == "final"]
        if not finals:
            missing.append(node)
            continue
        fin = finals[-1]
        ips += steady_images_per_s(recs) or 0.0
        idle.append(fin.get("idle_frac_total") or 0.0)
        steady.append(steady_idle_frac(recs) or 0.0)
        hashes.add(fin.get("params_hash"))
        bps.append((fin.get("bytes_sent") or 0) / max(1, fin.get("steps") or 1))
        if node == 0:
            accs = [r["test_acc"] for r in recs if r.get("event") in ("final", "eval") and r.get("test_acc") is not None]
            acc = accs[-1] if accs else None
    return {"ips": ips, "idle": sum(idle) / len(idle) if idle else None,
            "idle_steady": sum(steady) / len(steady) if steady else None, "acc": acc,
            "same_hash": len(hashes) == 1 and not missing, "bytes_per_step": sum(bps) / len(bps) if bps else None,
            "missing": missing}


if __name__ == "__main__":
    # For the shell benchmarks: `bench_util.py summary LOGDIR NODES` prints
    # run_summary as one JSON line.
    if len(sys.argv) == 4 and sys.argv[1] == "summary":
        print(json.dumps(run_summary(sys.argv[2], int(sys.argv[3]))))
    else:
        sys.exit("usage: bench_util.py summary LOGDIR NODES")
