#!/usr/bin/python3
"""Peak resident memory of PyTorch DDP (gloo, CPU) training the peers' MLP
(../shared/peers/models.py) at a chosen width, and of the same model trained
in one process without DDP: what DDP's averaging costs a process in memory
(bench/memory.sh sets it against tether's). Random data, SGD with momentum
0.9, as ../shared/peers/ddp_rank.py trains.
usage: ddp_memory.py --peers DIR [--world 2] [--hidden 3000] [--steps 40] [--batch 16] [--port 29531]
Prints one line per process, then
  RESULT params=... single_mb=... ddp_mb=... (ddp_mb: the largest rank's peak)"""
import argparse, os, resource, sys


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def train(rank, a, ddp, queue):
    sys.path.insert(0, a.peers)
    import torch, torch.nn.functional as F, torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    import models
    torch.set_num_threads(1); torch.manual_seed(rank)
    m = models.MLP(hidden=a.hidden)
    params = models.num_params(m)
    if ddp:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=rank, world_size=a.world)
        m = DDP(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, 1, 28, 28); y = torch.randint(0, 10, (a.batch,))
    for _ in range(a.steps):  # bounded: --steps
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()
    if ddp:
        dist.barrier()
    queue.put((("ddp" if ddp else "single"), rank, params, peak_mb()))
    if ddp:
        dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", required=True); ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=3000); ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16); ap.add_argument("--port", type=int, default=29531)
    a = ap.parse_args()
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=train, args=(0, a, False, queue)); p.start(); p.join(600)
    if p.exitcode != 0:
        sys.exit("ddp_memory: the single-process run failed (exit %s)" % p.exitcode)
    procs = [ctx.Process(target=train, args=(r, a, True, queue)) for r in range(a.world)]
    for q in procs: q.start()
    for q in procs: q.join(600)
    if any(q.exitcode != 0 for q in procs):
        sys.exit("ddp_memory: a DDP rank failed (exit codes %s)" % [q.exitcode for q in procs])
    rows = [queue.get(timeout=10) for _ in range(1 + a.world)]
    for kind, rank, params, mb in rows:
        print(f"{kind} rank {rank}: {params} parameters, peak RSS {mb:.1f} MB", flush=True)
    single = [mb for kind, _, _, mb in rows if kind == "single"][0]
    ddp = max(mb for kind, _, _, mb in rows if kind == "ddp")
    print(f"RESULT params={rows[0][2]} single_mb={single:.1f} ddp_mb={ddp:.1f}", flush=True)


if __name__ == "__main__":
    main()
