#!/usr/bin/python3
"""tether.Averager (python/tether) in PyTorch loops: nodes are local processes
on 127.0.0.1 (ports found free by binding), the reference is computed another
way in this process.

Run by meson (suite python) with PYTHONPATH=<build>/python; prints doctest's
summary line, which scripts/test_summary.py counts. Needs Debian's
python3-torch (/usr/bin/python3)."""
import glob, json, os, shutil, socket, subprocess, sys, tempfile, time, traceback

import numpy as np
import torch
import torch.nn.functional as F

SOURCE_ROOT = os.environ.get("TETHER_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD_ROOT = os.environ.get("TETHER_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
sys.path.insert(0, os.path.join(SOURCE_ROOT, "examples"))
import pytorch_fmnist  # noqa: E402  (the example's LeNet and loop)
import tether  # noqa: E402


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cluster_config(nodes, log_dir, **algorithm):
    return {
        "cluster": {"peers": [{"id": i, "host": "127.0.0.1", "port": p} for i, p in enumerate(free_ports(nodes))]},
        "algorithm": algorithm or {"name": "sync", "period": 1},
        # plaintext links: these tests are about the averaging, not the keys
        # (net.security "curve", the default, needs keys: `tether keygen`)
        "net": {"heartbeat_ms": 100, "peer_timeout_ms": 1500, "connect_timeout_ms": 20000, "security": "none"},
        "log": {"dir": log_dir, "every_steps": 5},
    }


def batch(step, node, size):
    """Node `node`'s batch of step `step`: the same tensors in every process."""
    g = torch.Generator().manual_seed(7919 * step + node)
    return torch.randn(size, 1, 28, 28, generator=g), torch.randint(0, 10, (size,), generator=g)


# ---- the nodes (run in child processes) -------------------------------------

def sync_node(node, cfg, steps, size, out, callbacks=False, device="cpu"):
    """callbacks: the parameters go through the runtime's callables (the path of
    CUDA tensors) even on the CPU; device: where the model lives."""
    pytorch_fmnist.set_threads(1)   # torch and OpenBLAS
    torch.manual_seed(100 + node)          # different initial values: the Averager agrees on node 0's
    model = pytorch_fmnist.LeNet().to(device)
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)   # created before the Averager: same Parameter objects
    avg = tether.Averager(model.parameters(), config=cfg, node=node, _callbacks=callbacks)
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert avg.flat.device == params[0].device
    np.save(f"{out}/init-{node}.npy", pytorch_fmnist.flat_params(model).cpu().numpy())
    path = [pytorch_fmnist.flat_params(model).cpu().numpy()]   # the parameters before each step, and at the end
    for k in range(steps):
        x, y = batch(k, node, size)
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert avg.step(images=size, loss=loss.item())
        path.append(pytorch_fmnist.flat_params(model).cpu().numpy())
    avg.finish()
    np.save(f"{out}/final-{node}.npy", pytorch_fmnist.flat_params(model).cpu().numpy())
    if node == 0:
        np.save(f"{out}/path-0.npy", np.stack(path))


def clocked_node(node, cfg, steps, size, sleep_s, out):
    """A loop that stops when step() says the run ended (clocked rounds)."""
    pytorch_fmnist.set_threads(1)
    torch.manual_seed(100 + node)
    model = pytorch_fmnist.LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    avg = tether.Averager(model.parameters(), config=cfg, node=node)
    ran = 0
    for k in range(steps):
        x, y = batch(k, node, size)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        time.sleep(sleep_s)
        ran = k + 1
        if not avg.step(images=size, loss=loss.item()):
            break
    ended = avg.ended
    avg.finish()
    np.save(f"{out}/final-{node}.npy", pytorch_fmnist.flat_params(model).numpy())
    with open(f"{out}/clocked-{node}.json", "w") as f:
        json.dump({"steps": ran, "ended": ended, "final": avg.metrics()}, f)


def refused_node(node, cfg, out, count=0):
    """count: a model of `count` parameters instead of LeNet."""
    pytorch_fmnist.set_threads(1)
    try:
        torch.manual_seed(0)
        params = [torch.zeros(count, requires_grad=True)] if count else pytorch_fmnist.LeNet().parameters()
        tether.Averager(params, config=cfg, node=node)
        result = {"raised": None}
    except tether.NetError as e:
        result = {"raised": type(e).__name__, "message": str(e), "is_value_error": isinstance(e, ValueError)}
    except ValueError as e:
        result = {"raised": type(e).__name__, "message": str(e), "is_value_error": True}
    with open(f"{out}/refused-{node}.json", "w") as f:
        json.dump(result, f)


def spawn(target, args_per_node, timeout_s=120):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in args_per_node]
    for p in procs:
        p.start()
    deadline = time.time() + timeout_s
    for p in procs:
        p.join(max(1, deadline - time.time()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


# ---- the tests ---------------------------------------------------------------

def check_sync_equals_union(nodes, tmp, callbacks=False, device="cpu", tolerance=1e-6):
    steps, size = 20, 8
    cfg = cluster_config(nodes, f"{tmp}/log")
    codes = spawn(sync_node, [(r, cfg, steps, size, tmp, callbacks, device) for r in range(nodes)])
    assert codes == [0] * nodes, f"exit codes {codes}"
    init0 = np.load(f"{tmp}/init-0.npy")
    for r in range(1, nodes):
        assert np.array_equal(np.load(f"{tmp}/init-{r}.npy"), init0), f"node {r} did not start from node 0's values"
    finals = [np.load(f"{tmp}/final-{r}.npy") for r in range(nodes)]
    for r in range(1, nodes):
        assert np.array_equal(finals[r], finals[0]), f"node {r}'s final parameters differ from node 0's"
    # One process on the union of every node's batches, step by step from
    # node 0's parameters before each step: every sync step must be the
    # union's SGD step, to float rounding. (Compared only at the end, the two
    # runs part by chance: a rounding-sized difference that moves a ReLU or a
    # max-pool choice grows a little every step; on one machine 4 nodes ended
    # 1.9e-3 apart after steps that each matched to 6e-8.)
    path = np.load(f"{tmp}/path-0.npy")
    assert np.array_equal(path[0], init0), "node 0's path does not start at its initial parameters"
    torch.manual_seed(100)
    model = pytorch_fmnist.LeNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    assert np.array_equal(pytorch_fmnist.flat_params(model).numpy(), init0)
    worst, worst_step = 0.0, 0
    for k in range(steps):
        with torch.no_grad():   # the union steps from where node 0 stood
            torch.nn.utils.vector_to_parameters(torch.from_numpy(path[k].copy()), model.parameters())
        xs, ys = zip(*(batch(k, r, size) for r in range(nodes)))
        loss = F.cross_entropy(model(torch.cat(xs)), torch.cat(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref = pytorch_fmnist.flat_params(model).numpy().astype(np.float64)
        rel = np.linalg.norm(path[k + 1].astype(np.float64) - ref) / np.linalg.norm(ref)
        if rel > worst:
            worst, worst_step = rel, k
    moved = np.linalg.norm(path[-1].astype(np.float64) - init0) / np.linalg.norm(path[-1])
    print(f"  sync {nodes} nodes: each of {steps} steps against the union's step from the same parameters: "
          f"largest relative distance {worst:.2e} (step {worst_step}); the training moved the parameters by {moved:.2e}")
    assert moved > 1e-3, "the steps hardly moved the parameters: the comparison would be empty"
    assert worst <= tolerance, f"step {worst_step}: relative distance {worst:.3e} > {tolerance}"
    # The metrics: the binary's records, read by `tether dashboard`.
    finals_rec = []
    for r in range(nodes):
        with open(f"{tmp}/log/node-{r}.jsonl") as f:
            recs = [json.loads(line) for line in f]
        assert any("event" not in x and x["step"] == 20 and x["round"] == 20 for x in recs), recs[-2:]
        finals_rec.append(next(x for x in recs if x.get("event") == "final"))
    assert len({x["params_hash"] for x in finals_rec}) == 1
    assert all(x["steps"] == steps and x["interrupted"] is False for x in finals_rec)
    dash = subprocess.run([f"{BUILD_ROOT}/tether", "dashboard", f"{tmp}/log", "--once"], capture_output=True,
                          text=True, timeout=30)
    assert dash.returncode == 0, dash.stderr
    assert f"final models: identical on {nodes} node(s)" in dash.stdout, dash.stdout


def test_sync_2_nodes_equals_one_process_on_the_union(tmp):
    check_sync_equals_union(2, tmp)


def test_sync_4_nodes_equals_one_process_on_the_union(tmp):
    check_sync_equals_union(4, tmp)


def test_sync_2_nodes_through_callbacks_equals_the_buffer_path(tmp):
    # The path CUDA tensors take (the runtime copies x out as a round closes
    # and results in as merges land, through Python callables), on CPU
    # tensors: the same union reference, and the same bits as the direct
    # buffer of the test above.
    check_sync_equals_union(2, tmp, callbacks=True)
    direct = f"{tmp}/direct"
    os.makedirs(direct)
    check_sync_equals_union(2, direct)
    for r in range(2):
        assert np.array_equal(np.load(f"{tmp}/final-{r}.npy"), np.load(f"{direct}/final-{r}.npy")), \
            f"node {r}: the callback path and the buffer path end with different bits"


def test_sync_2_nodes_on_cuda_tensors_equal_one_process_on_the_union(tmp):
    if not torch.cuda.is_available():
        raise Skip("no CUDA device (torch.cuda.is_available() is False)")
    # cuDNN's kernels against the CPU reference: float rounding differs
    check_sync_equals_union(2, tmp, device="cuda", tolerance=1e-4)


def test_overlap_4_nodes_end_with_the_same_parameters(tmp):
    # The example's loop on the first 8192 Fashion-MNIST images (32 steps of
    # 64 per node), s = 2: rounds overlap the compute; finish() agrees.
    out = f"{tmp}/out.json"
    res = subprocess.run([sys.executable, f"{SOURCE_ROOT}/examples/pytorch_fmnist.py", "--nodes", "4",
                          "--staleness", "2", "--train-limit", "8192", "--test-limit", "2000",
                          "--log-dir", f"{tmp}/log", "--save-params", f"{tmp}/p", "--out", out],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    print("  " + res.stdout.strip().splitlines()[-1])
    with open(out) as f:
        summary = json.load(f)
    finals = [np.load(f"{tmp}/p-node{r}.npy") for r in range(4)]
    for r in range(1, 4):
        assert np.array_equal(finals[r], finals[0]), f"node {r}'s final parameters differ from node 0's"
    assert [r["steps"] for r in summary["results"]] == [32] * 4
    acc = summary["results"][0]["test_acc"]
    assert acc > 0.3, f"test accuracy {acc} after 32 averaged steps: not training"
    with open(f"{tmp}/log/node-2.jsonl") as f:
        recs = [json.loads(line) for line in f]
    periodic = [x for x in recs if "event" not in x]
    assert periodic and all(x["loss"] is not None and 0 <= x["train_acc"] <= 1 and x["lr"] == 0.05 for x in periodic)
    assert max(x["rounds_in_flight"] for x in periodic) <= 2


def test_round_ms_a_slow_process_stops_at_the_cut_and_all_end_equal(tmp):
    # Rounds by time: node 2 sleeps 60 ms a step, the others 2 ms. The fast
    # ones run all 60 steps; node 2 sees step() return False with ended True
    # (the run ended at the cut), and every process ends with the same bits.
    nodes, steps = 3, 60
    cfg = cluster_config(nodes, f"{tmp}/log", name="overlap", staleness=2, round_ms=40)
    codes = spawn(clocked_node, [(n, cfg, steps, 8, 0.06 if n == 2 else 0.002, tmp) for n in range(nodes)])
    assert codes == [0] * nodes, codes
    runs = [json.load(open(f"{tmp}/clocked-{n}.json")) for n in range(nodes)]
    finals = [np.load(f"{tmp}/final-{n}.npy") for n in range(nodes)]
    for n in range(1, nodes):
        assert np.array_equal(finals[n], finals[0]), f"process {n}'s final parameters differ from process 0's"
    assert max(runs[0]["steps"], runs[1]["steps"]) == steps
    assert runs[2]["steps"] < steps, runs[2]
    assert runs[2]["ended"], runs[2]
    assert all(not r["final"]["interrupted"] for r in runs), [r["final"] for r in runs]
    assert all(r["final"]["period"] == 0 for r in runs)   # rounds by time


def test_single_node_optimizer_and_views(tmp):
    torch.manual_seed(3)
    model = pytorch_fmnist.LeNet()
    params = list(model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = pytorch_fmnist.flat_params(model).clone()
    avg = tether.Averager(model.parameters(), config={"log": {"dir": f"{tmp}/log", "every_steps": 2}})
    # same objects, same values, each parameter a view of the one buffer
    assert all(a is b for a, b in zip(params, model.parameters()))
    assert torch.equal(pytorch_fmnist.flat_params(model), before)
    assert avg.flat.numel() == 454922
    base, end = avg.flat.data_ptr(), avg.flat.data_ptr() + 4 * avg.flat.numel()
    assert all(base <= p.data_ptr() < end for p in model.parameters())
    x, y = batch(0, 0, 16)
    for k in range(4):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()   # the optimizer made before the Averager writes into the buffer
        assert avg.step(images=16, loss=loss.item())
    assert torch.equal(avg.flat, pytorch_fmnist.flat_params(model))
    assert not torch.equal(avg.flat, before)
    m = avg.metrics()
    assert m["step"] == 4 and m["round"] == 4 and m["images_per_s"] > 0, m
    avg.finish(test_acc=0.5)
    assert avg.metrics()["event"] == "final" and avg.metrics()["test_acc"] == 0.5
    try:
        avg.step()
        raise AssertionError("step() after finish() was accepted")
    except RuntimeError as e:
        assert "finish() was already called" in str(e), e
    # A parameter moved out of the buffer is refused, not silently dropped.
    model2 = pytorch_fmnist.LeNet()
    avg2 = tether.Averager(model2.parameters(), config={"log": {"dir": f"{tmp}/log2"}})
    model2.classifier[3].weight.data = torch.zeros(10, 128)
    try:
        avg2.step()
        raise AssertionError("a parameter outside the buffer was accepted")
    except RuntimeError as e:
        assert "params[6]: no longer a view of the Averager's buffer" in str(e), e


def test_blas_threads_follow_torch_or_the_averager_warns(tmp):
    import warnings
    before = tether.blas_threads()
    if before is None:
        raise Skip("this torch has not loaded OpenBLAS (tether.blas_threads() is None)")
    torch_before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert tether.set_blas_threads(2) == before
        assert tether.blas_threads() == 2
        params = list(pytorch_fmnist.LeNet().parameters())
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            tether.Averager(params, config={"log": {"dir": f"{tmp}/a"}})
        msgs = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == 1 and "OpenBLAS runs 2 threads, torch 1" in msgs[0], msgs
        assert "tether.set_blas_threads(torch.get_num_threads())" in msgs[0], msgs
        assert tether.set_blas_threads(1) == 2 and tether.blas_threads() == 1
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            tether.Averager(list(pytorch_fmnist.LeNet().parameters()), config={"log": {"dir": f"{tmp}/b"}})
        assert not [w for w in seen if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in seen]
        expect_error(ValueError, "set_blas_threads: expected at least 1 thread, got 0", lambda: tether.set_blas_threads(0))
    finally:
        tether.set_blas_threads(before)
        torch.set_num_threads(torch_before)


def expect_error(kind, text, fn):
    try:
        fn()
    except kind as e:
        assert text in str(e), f"expected {text!r} in {str(e)!r}"
        return e
    raise AssertionError(f"no {kind.__name__} ({text!r})")


def test_errors_name_the_json_path(tmp):
    params = list(pytorch_fmnist.LeNet().parameters())
    two = cluster_config(2, f"{tmp}/log")
    e = expect_error(ValueError, "algorithm.staleness: expected an integer in 0..64, got -1",
                     lambda: tether.Averager(params, config={**two, "algorithm": {"staleness": -1}}, node=0))
    assert isinstance(e, tether.ConfigError)
    expect_error(ValueError, "net.bogus: unknown key",
                 lambda: tether.Averager(params, config={**two, "net": {"bogus": 1}}, node=0))
    expect_error(ValueError, "monitor.bound: the gossip mixer has no proven distance bound",
                 lambda: tether.Averager(params, config={**two, "algorithm": {"mixer": "gossip"},
                                                         "monitor": {"bound": 1.0}}, node=0))
    expect_error(ValueError, "node 2: the config has nodes 0..1", lambda: tether.Averager(params, config=two, node=2))
    expect_error(ValueError, "algorithm.period: expected an integer >= 1 or \"auto\", got 0",
                 lambda: tether.Averager(params, config=two, node=0, set=["algorithm.period=0"]))
    expect_error(ValueError, "/nonexistent.json: cannot open config file",
                 lambda: tether.Averager(params, config="/nonexistent.json"))
    bad = f"{tmp}/bad.json"
    with open(bad, "w") as f:
        f.write('{"cluster": {"peers": [{"id": 0, "host": "127.0.0.1", "port": 70000}]}}')
    expect_error(ValueError, "bad.json: cluster.peers[0].port: expected an integer in 1..65535, got 70000",
                 lambda: tether.Averager(params, config=bad))
    expect_error(TypeError, "dtype torch.float64",
                 lambda: tether.Averager([torch.zeros(3, dtype=torch.float64)], config={}))
    expect_error(TypeError, "expected a file path or a dict", lambda: tether.Averager(params, config=3))
    expect_error(ValueError, "no parameters", lambda: tether.Averager([], config={}))


def test_unreachable_peer_is_a_net_error_with_the_runtime_text(tmp):
    # Node 0 of 2; node 1 never starts: the start fails after
    # net.connect_timeout_ms, naming the peer, as the binary says it.
    cfg = cluster_config(2, f"{tmp}/log")
    cfg["net"]["connect_timeout_ms"] = 1000
    t0 = time.time()
    e = expect_error(tether.NetError, "peer 1",
                     lambda: tether.Averager(pytorch_fmnist.LeNet().parameters(), config=cfg, node=0))
    assert isinstance(e, RuntimeError) and not isinstance(e, tether.StartRefused), type(e)
    assert time.time() - t0 < 30, "the start did not fail within its connect time-out"
    print(f"  {type(e).__name__}: {e}")


def test_another_config_is_refused(tmp):
    cfg0 = cluster_config(2, f"{tmp}/log")
    cfg1 = json.loads(json.dumps(cfg0))
    cfg1["algorithm"] = {"name": "overlap", "staleness": 1}
    codes = spawn(refused_node, [(0, cfg0, tmp), (1, cfg1, tmp)])
    assert codes == [0, 0], codes
    for n in range(2):
        with open(f"{tmp}/refused-{n}.json") as f:
            r = json.load(f)
        assert r["raised"] == "StartRefused" and r["is_value_error"], r
        assert "algorithm" in r["message"], r


def test_another_parameter_count_fails_at_the_start(tmp):
    cfg = cluster_config(2, f"{tmp}/log")
    codes = spawn(refused_node, [(0, cfg, tmp), (1, cfg, tmp, 1000)])
    assert codes == [0, 0], codes
    for n in range(2):
        with open(f"{tmp}/refused-{n}.json") as f:
            r = json.load(f)
        print(f"  node {n}: {r['raised']}: {r['message']}")
        assert r["raised"] == "StartRefused" and "parameter count" in r["message"], r


class Skip(Exception):
    """Raised by a test that cannot run here; the reason is printed."""


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


def main():
    only = sys.argv[1:]
    pytorch_fmnist.set_threads(1)   # torch's and OpenBLAS's (tether.Averager warns when they differ)
    passed = failed = skipped = 0
    for t in TESTS:
        if only and not any(o in t.__name__ for o in only):
            continue
        tmp = tempfile.mkdtemp(prefix="tether-py-")
        t0 = time.time()
        try:
            t(tmp)
            passed += 1
            print(f"PASS {t.__name__} ({time.time() - t0:.1f} s)", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        except Skip as e:
            skipped += 1
            print(f"SKIP {t.__name__}: {e}", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__} ({time.time() - t0:.1f} s; files in {tmp})", flush=True)
            traceback.print_exc(file=sys.stdout)
    print(f"[doctest] test cases: {passed + failed + skipped} | {passed} passed | {failed} failed | {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
