#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer harnesses (test/fuzz/corpus/NAME/),
a few small valid inputs per harness in each harness's input layout (see the
comment at the top of fuzz_NAME.cpp). Run from anywhere; rewrites the files.
Hashes and checksums are left to the harnesses' repair flags."""
import gzip, json, os, pathlib, struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "corpus"


def put(name, seed, data):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    (d / seed).write_bytes(data)


# frames: set-up bytes, then ops. A frame op with bits 2..5 set (0x3d) has its
# magic, version, payload length and both hashes repaired by the harness.
# Offset 28 is the sender's view epoch (protocol v4); the first view is 1.
def header(kind, sender, step=0, rnd=0, chunk=0, offset=0, count=0, epoch=1):
    return struct.pack("<IHBBIIQIIQQQQQ", 0, 0, kind, 0, sender, step, rnd, chunk, epoch, offset, count, 0, 0, 0)


def frame(kind, sender, payload_floats, **kw):
    payload = struct.pack("<%df" % len(payload_floats), *payload_floats)
    return bytes([0x3D]) + header(kind, sender, count=len(payload_floats), **kw) + struct.pack("<H", len(payload)) + payload


def frame_u64(kind, sender, values, **kw):  # the membership kinds: a list of u64
    payload = struct.pack("<%dQ" % len(values), *values)
    return bytes([0x3D]) + header(kind, sender, count=len(values), **kw) + struct.pack("<H", len(payload)) + payload


# ring, 3 nodes, self 1 (predecessor 0), 12 floats, chunks of 2 floats, window 2:
# segment s = [4s, 4s+4); step 0 from node 0 carries segment 0, step 1 segment 2,
# all-gather steps 2 and 3 carry segments 1 and 0.
setup = bytes([2 * 1 + 0, 1, 12, 1, 1])  # ring, nodes 2 + 1, self 1, count 12, chunk 2 floats, window 2
ring = setup
for c in range(2):
    ring += frame(3, 0, [1.0, 2.0], step=0, chunk=c, offset=0 + 2 * c)
for c in range(2):
    ring += frame(3, 0, [3.0, 4.0], step=1, chunk=c, offset=8 + 2 * c)
for c in range(2):
    ring += frame(3, 0, [5.0, 6.0], step=2, chunk=c, offset=4 + 2 * c)
    ring += frame(3, 0, [7.0, 8.0], step=3, chunk=c, offset=0 + 2 * c)
ring += bytes([0]) + frame(3, 0, [1.5, 2.5], step=0, rnd=1, chunk=0, offset=0)
put("frames", "ring-3-nodes", ring)
# ring, 4 nodes with node 2 left out of view 3 (members 0, 1, 3), self 1: the
# same layout as above over 3 members; then a frame of view 2 and one from
# node 2 (both dropped), and a propose and a commit (decoded, payload checked)
setup = bytes([(2 << 1) | (1 << (3 + 2)), 1, 12, 1 | ((3 - 1) << 3), 1])
view = setup
for step, base in ((0, 0), (1, 8), (2, 4), (3, 0)):
    for c in range(2):
        view += frame(3, 0, [1.0 + step, 2.0], step=step, chunk=c, offset=base + 2 * c, epoch=3)
view += frame(3, 0, [9.0, 9.0], step=0, rnd=1, chunk=0, offset=0, epoch=2)
view += frame(3, 2, [9.0, 9.0], step=0, rnd=1, chunk=0, offset=0, epoch=3)
view += frame_u64(8, 0, [4, 3, 0, 1, 3], epoch=3)
view += frame_u64(10, 0, [4, 1, 3, 0, 1, 1, 1, 3, 1], epoch=3)
view += bytes([0])
put("frames", "ring-view-3-of-4", view)
# gossip, 2 nodes (partner of 0 is 1 every round), 6 floats, chunks of 3 floats
g = bytes([1, 0, 6, 2, 2])
for r in range(2):
    for c in range(2):
        g += frame(4, 1, [float(r), float(c), 0.5], rnd=r, chunk=c, offset=3 * c)
    g += bytes([0])
put("frames", "gossip-2-nodes", g)
# gossip, 3 nodes (round-robin with a bye), self 2
g3 = bytes([3, 2, 4, 3, 2]) + frame(4, 1, [1.0, 2.0, 3.0, 4.0], rnd=0, chunk=0, offset=0) + bytes([0])
g3 += frame(4, 0, [1.0, 2.0, 3.0, 4.0], rnd=1, chunk=0, offset=0)
put("frames", "gossip-3-nodes", g3)
# gossip, 4 nodes, self 0: a partner's snapshot of round 5 (further ahead than
# two windows: no barrier, protocol v6), and the stop agreement's frames
# (kind 18, u64 [op, query, value, known]: ask, answer, cut; decoded, payload
# checked)
g4 = bytes([1 | (2 << 1), 0, 4, 3, 0]) + frame(4, 1, [1.0, 2.0, 3.0, 4.0], rnd=0, chunk=0, offset=0) + bytes([0])
g4 += frame(4, 2, [1.0, 2.0, 3.0, 4.0], rnd=5, chunk=0, offset=0)  # round 5: partner 0 ^ 2
g4 += frame_u64(18, 3, [1, 0, 0, 0]) + frame_u64(18, 2, [3, (1 << 32) | 1, 7, 0]) + frame_u64(18, 1, [4, 0, 9, 0])
put("frames", "gossip-4-nodes-cut", g4)

# hello: 10 fixed fields (the last: the process's incarnation), then key pairs
fixed = struct.pack("<10Q", 0x1234, 7, 4, 0, 3, 1 << 20, 61706, 0, 0, 0x9e3779b97f4a7c15)
put("hello", "no-keys", fixed)
put("hello", "three-keys", fixed + struct.pack("<6Q", 1, 2, 3, 4, 5, 6))

# config: the shipped configs; one with --set overrides and a --get
for p in sorted((ROOT / "configs").glob("*.json")):
    put("config", p.stem, p.read_bytes())
put("config", "sets-and-get", b'{"model": {"name": "mlp"}}\0optimizer.lr=0.2\0cluster.peers=[{"id":0,"port":5000}]'
    b"\0?cluster.peers.0.host")

# checkpoint: flag 1 (the harness appends the checksum), then the file
def checkpoint(meta, params, momentum, anchor):
    meta = dict(meta, params_count=len(params), momentum_count=len(momentum), anchor_count=len(anchor))
    h = json.dumps(meta, separators=(",", ":")).encode()
    body = b"TETHERCK" + struct.pack("<II", 1, len(h)) + h
    for v in (params, momentum, anchor):
        body += struct.pack("<%df" % len(v), *v)
    return bytes([1]) + body


put("checkpoint", "single-node", checkpoint({"model": "mlp", "data": "synthetic", "node": 0, "nodes": 1, "step": 10,
                                             "test_acc": 0.5}, [1.0, 2.0, 3.0], [0.0, 0.5], []))
put("checkpoint", "cluster-cut", checkpoint({"model": "lenet", "step": 4, "round": 2, "cut": True, "max_delta": 0.25,
                                             "run_config": {"model.name": "\"lenet\""}}, [1.0], [0.0], [1.0]))

# idx: flags, u16 length of the image file, the image file, the label file
def idx(flags, n, rows, cols):
    img = bytes([0, 0, 8, 3]) + struct.pack(">III", n, rows, cols) + bytes((7 * i) % 256 for i in range(n * rows * cols))
    lab = bytes([0, 0, 8, 1]) + struct.pack(">I", n) + bytes(i % 10 for i in range(n))
    return bytes([flags]) + struct.pack("<H", len(img)) + img + lab


put("idx", "plain", idx(0, 3, 4, 5))
put("idx", "gzip-both", idx(3, 2, 2, 2))
# a gzip image file whose header claims 100000 28x28 images over 10 bytes: the
# reader must not size its buffer from the claim (the harness's 12 MiB bound)
img = bytes([0, 0, 8, 3]) + struct.pack(">III", 100000, 28, 28) + bytes(range(10))
lab = bytes([0, 0, 8, 1]) + struct.pack(">I", 100000) + bytes([1, 2, 3])
put("idx", "regress-gzip-claims-more", bytes([1]) + struct.pack("<H", len(img)) + img + lab)

# cifar: flags, then records of a label byte and 3072 pixels
rec = lambda label: bytes([label]) + bytes((label + i) % 256 for i in range(3072))
put("cifar", "plain-2", bytes([0]) + rec(3) + rec(9))
put("cifar", "gzip-1", bytes([1]) + rec(5))
