"""Helpers shared by the Python benchmarks of bench/: ports, the tether binary,
and the nodes' metrics records."""
import json, os, socket, subprocess, sys

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
