#!/usr/bin/python3
"""Fashion-MNIST with a PyTorch loop averaged by tether (tether.Averager), or
by PyTorch's DistributedDataParallel with the same model, data shards,
optimizer and batches (--backend ddp), for comparison.

The model is the LeNet-style network the peer benchmarks use (conv5x5 1->32,
ReLU, maxpool 2, conv5x5 32->64, ReLU, maxpool 2, fc 3136->128, ReLU,
fc 128->10; 454,922 parameters). Each of the N nodes trains on its own shard
of every epoch's shuffle (node r takes positions r, r+N, ...; every node the
same number of batches); after training, node 0 evaluates on the test split.

  # N local processes (ports base-port .. base-port+N-1 on 127.0.0.1):
  PYTHONPATH=build/python /usr/bin/python3 examples/pytorch_fmnist.py --nodes 4 --staleness 2
  # the same with DDP (gloo):
  /usr/bin/python3 examples/pytorch_fmnist.py --nodes 4 --backend ddp
  # one node of a cluster config (one process per node, on any hosts):
  PYTHONPATH=build/python /usr/bin/python3 examples/pytorch_fmnist.py --config configs/local-4.json --node 1
  # one rank of the same under DDP: rank = --node, world = the config's
  # peers, rendezvous at cluster.peers[0]'s host and port (--base-port
  # instead of its port); gloo's interface from GLOO_SOCKET_IFNAME, e.g.
  # in a namespace of scripts/switch.sh (bench/switch.sh does this):
  GLOO_SOCKET_IFNAME=tether-n1 ip netns exec tether-ns1 /usr/bin/python3 examples/pytorch_fmnist.py \
      --backend ddp --config configs/switch-4.json --node 1

With --config the file's cluster, algorithm, monitor, net and log keys apply;
its data.batch_size, optimizer.lr/momentum, train.epochs, train.max_steps and
train.seed replace --batch, --lr, --momentum, --epochs, --max-steps and
--seed (so the file describes the run). Metrics go to <log dir>/node-<id>.jsonl:
`build/tether dashboard runs/pytorch-fmnist` and `build/tether report
runs/pytorch-fmnist` read them. Prints one `RESULT ...` line per run (node 0;
with --config every process prints its own), and with --out a JSON summary.
Run with Debian's /usr/bin/python3 (python3-torch).
"""
import argparse, gzip, hashlib, json, os, socket, struct, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"   # Debian's dataset-fashion-mnist


class LeNet(nn.Module):
    """conv(1->32,5x5,p2)+relu+pool2, conv(32->64,5x5,p2)+relu+pool2, fc(3136->128)+relu, fc(128->10)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def read_idx(path):
    """An IDX(.gz) file (the MNIST format) as a NumPy array."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(data_dir, split, limit=0):
    """(images (n,1,28,28) float32 in [0,1], labels (n,) int64) of 'train' or 't10k'."""
    def find(kind):
        for name in (f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz",
                     f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"):
            if os.path.exists(os.path.join(data_dir, name)):
                return os.path.join(data_dir, name)
        raise FileNotFoundError(f"{data_dir}: no {split} {kind} (install Debian's dataset-fashion-mnist)")
    x = read_idx(find("images"))
    y = read_idx(find("labels"))
    if limit:   # before the conversion to float
        x, y = x[:limit], y[:limit]
    return torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def shard_batches(n, nodes, node, batch, seed, epoch):
    """This node's batches of one epoch: a shuffle shared by every node (seed,
    epoch), node r taking positions r, r+N, ...; every node gets
    floor(n / N / batch) batches."""
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    perm = torch.randperm(n, generator=g)
    mine = perm[node::nodes]
    steps = (n // nodes) // batch
    return [mine[i * batch:(i + 1) * batch] for i in range(steps)]


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def params_sha(model):
    return hashlib.sha256(flat_params(model).numpy().tobytes()).hexdigest()[:16]


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            out = model(x[i:i + batch])
            loss += F.cross_entropy(out, y[i:i + batch], reduction="sum").item()
            correct += (out.argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(y), loss / len(y)


def tether_config(a, nodes):
    return {
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": a.base_port + i} for i in range(nodes)]},
        "data": {"batch_size": a.batch},
        "optimizer": {"lr": a.lr, "momentum": a.momentum},
        "algorithm": {"name": "sync" if a.staleness == 0 else "overlap", "staleness": a.staleness,
                      "period": a.period, "mixer": a.mixer},
        "train": {"epochs": a.epochs, "seed": a.seed},
        "log": {"dir": a.log_dir, "every_steps": a.log_every},
        # local processes on 127.0.0.1: plaintext links (net.security
        # "curve", the default, needs keys: `tether keygen --config`)
        "net": {"security": "none"},
    }


def set_threads(n):
    """n threads for torch and for OpenBLAS, its BLAS on Debian, which
    torch.set_num_threads does not reach (tether.set_blas_threads does; both
    backends alike, DDP's too when the module is importable)."""
    torch.set_num_threads(n)
    try:
        import tether
    except ImportError:
        return
    tether.set_blas_threads(n)


def run_node(node, nodes, a, result_queue=None):
    set_threads(a.threads)
    if a.config:   # the file describes the run
        with open(a.config) as f:
            doc = json.load(f)
        a.batch = doc.get("data", {}).get("batch_size", a.batch)
        a.lr = doc.get("optimizer", {}).get("lr", a.lr)
        a.momentum = doc.get("optimizer", {}).get("momentum", a.momentum)
        a.epochs = doc.get("train", {}).get("epochs", a.epochs)
        a.max_steps = doc.get("train", {}).get("max_steps") or a.max_steps
        a.seed = doc.get("train", {}).get("seed", a.seed)
        peers = doc.get("cluster", {}).get("peers") or []
        nodes = max(1, len(peers))
        alg = doc.get("algorithm", {})
        a.staleness = 0 if alg.get("name") == "sync" else alg.get("staleness", 2)   # for the RESULT line
    torch.manual_seed(a.seed)
    x, y = load_split(a.data, "train", a.train_limit)
    model = LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    avg = None
    if a.backend == "tether":
        import tether
        avg = tether.Averager(model.parameters(), config=a.config or tether_config(a, nodes), node=node)
        train_model = model
    else:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP
        master = f"127.0.0.1:{a.base_port}"
        if a.config:   # rank 0 at the first peer's host; its port unless --base-port
            master = f"{peers[0]['host']}:{a.base_port or peers[0]['port']}" if peers else f"127.0.0.1:{a.base_port}"
        dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=node, world_size=nodes)
        train_model = DDP(model)
    images, t0 = 0, time.perf_counter()
    steps = 0
    stopped = False
    for epoch in range(a.epochs):
        if a.max_steps and steps >= a.max_steps:
            break
        for idx in shard_batches(len(y), nodes, node, a.batch, a.seed, epoch):
            if a.max_steps and steps >= a.max_steps:   # every node stops at the same step
                break
            xb, yb = x[idx], y[idx]
            out = train_model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            images += len(yb)
            steps += 1
            if avg is not None:
                correct = (out.argmax(1) == yb).sum().item()
                if not avg.step(images=len(yb), loss=loss.item(), correct=correct, lr=a.lr, epoch=epoch + 1):
                    stopped = True
                    break
        if stopped:
            break
    train_s = time.perf_counter() - t0
    test_acc = test_loss = None
    xt, yt = load_split(a.data, "t10k", a.test_limit) if node == 0 else (None, None)
    if avg is not None:
        avg.finish()
        metrics = avg.metrics()
        if node == 0:
            test_acc, test_loss = evaluate(model, xt, yt)
            avg.log_eval(test_acc, test_loss, a.epochs)
    else:
        import torch.distributed as dist
        dist.barrier()
        metrics = {}
        if node == 0:
            test_acc, test_loss = evaluate(model, xt, yt)
    wall_s = time.perf_counter() - t0
    res = {"node": node, "backend": a.backend, "steps": steps, "images": images, "train_s": train_s,
           "wall_s": wall_s, "images_per_s": images / train_s, "params_sha": params_sha(model),
           "test_acc": test_acc, "test_loss": test_loss, "stopped": stopped,
           "idle_frac_total": metrics.get("idle_frac_total"), "bytes_sent": metrics.get("bytes_sent")}
    if a.save_params:
        np.save(f"{a.save_params}-node{node}.npy", flat_params(model).numpy())
    if result_queue is not None:
        result_queue.put(res)
        result_queue.close()
        result_queue.join_thread()   # flushed before a possible os._exit below
    return res


def spawned_node(node, nodes, a, result_queue):
    """run_node in a process of its own (local mode)."""
    run_node(node, nodes, a, result_queue)
    if a.backend == "ddp":
        exit_now()


def exit_now():
    """A DDP rank's exit: skips the gloo teardown, which can hang once rank 0
    is gone (see ddp_rank.py of the peers); every collective has completed."""
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)


def free_port_block(n):
    """A base port with n free consecutive ports on 127.0.0.1 (checked by binding)."""
    for base in range(24000 + os.getpid() % 2000 * 8, 60000, 97):
        socks = []
        try:
            for i in range(n + 1):
                s = socket.socket(); s.bind(("127.0.0.1", base + i)); socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=4, help="local processes to spawn")
    ap.add_argument("--config", help="a tether config file: run only --node of its cluster")
    ap.add_argument("--node", type=int, default=0, help="with --config: this process's node id")
    ap.add_argument("--backend", choices=["tether", "ddp"], default="tether")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps per node (0: all epochs)")
    ap.add_argument("--batch", type=int, default=64, help="per node")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--staleness", type=int, default=2, help="tether: s (0: sync)")
    ap.add_argument("--period", type=int, default=1, help="tether: H, local steps per round")
    ap.add_argument("--mixer", choices=["ring", "gossip"], default="ring")
    ap.add_argument("--threads", type=int, default=1, help="torch (and OpenBLAS) threads per process")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--train-limit", type=int, default=0, help="use the first N training images (0: all)")
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    ap.add_argument("--log-dir", default="runs/pytorch-fmnist")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--base-port", type=int, default=0,
                    help="0: find free ports (with --config and ddp: the rendezvous port, 0: the first peer's)")
    ap.add_argument("--save-params", help="write each node's final parameters to PREFIX-node<id>.npy")
    ap.add_argument("--out", help="write the per-node results as JSON to this file")
    a = ap.parse_args(argv)

    if a.config:
        res = run_node(a.node, 0, a)
        results = [res]
    else:
        import torch.multiprocessing as mp
        if a.base_port == 0:
            a.base_port = free_port_block(a.nodes)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [ctx.Process(target=spawned_node, args=(r, a.nodes, a, q)) for r in range(a.nodes)]
        for p in procs:
            p.start()
        results = []
        for _ in procs:
            while True:
                try:
                    results.append(q.get(timeout=5))
                    break
                except Exception:
                    if any(p.exitcode not in (None, 0) for p in procs) or all(p.exitcode == 0 for p in procs):
                        for p in procs:
                            if p.exitcode is None:
                                p.kill()
                        raise SystemExit(f"a node failed: exit codes {[p.exitcode for p in procs]}")
        for p in procs:
            p.join()
        results.sort(key=lambda r: r["node"])
    r0 = next((r for r in results if r["node"] == 0), results[0])
    same = len({r["params_sha"] for r in results}) == 1
    total_ips = sum(r["images"] for r in results) / max(r["train_s"] for r in results)
    acc = "n/a" if r0["test_acc"] is None else f"{r0['test_acc']:.4f}"
    print(f"RESULT backend={a.backend} nodes={len(results)} epochs={a.epochs} batch/node={a.batch} "
          f"staleness={a.staleness if a.backend == 'tether' else '-'} steps/node={r0['steps']} "
          f"test_acc={acc} images_per_s={total_ips:.1f} same_params={same} params_sha={r0['params_sha']}",
          flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"results": results, "same_params": same, "images_per_s": total_ips}, f, indent=1)
    if a.config and a.backend == "ddp":
        exit_now()
    return results


if __name__ == "__main__":
    main()
