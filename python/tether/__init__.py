"""tether's averaging inside a PyTorch training loop.

    avg = tether.Averager(model.parameters(), config="configs/local-4.json", node=rank)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for x, y in loader:
        loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
        if not avg.step(images=len(y), loss=loss.item()):   # False: the cluster stopped
            break
    avg.finish()   # drains; every node ends with the same parameters

The parameters live in one flat float32 buffer (``avg.flat``): the constructor
copies them into it once and sets each parameter's ``.data`` to a view of it,
so the optimizer's updates land in the buffer and the averaging reads and
writes it in place, with no copy per step. What that means (docs/python.md):

* The Parameter objects stay the same objects (``p.data = view`` keeps their
  identity): an optimizer created before or after the Averager updates the
  buffer alike, and its state (momentum) stays attached to them.
* A tensor that viewed a parameter's old storage (taken before the call) no
  longer aliases it; take views after the call.
* Parameters created after the call (a new layer, ``model.to(...)``,
  ``load_state_dict`` that replaces tensors) are not averaged: build the
  model, load its weights, then create the Averager. ``load_state_dict`` that
  copies into the existing tensors (the default) is fine. Do not assign
  ``p.data`` yourself afterwards.
* Every node must pass the same parameters in the same order and shapes.
  Node 0's initial values win: after the constructor every node holds them.
* float32 tensors, all on the CPU or all on one CUDA device (another dtype,
  or a mix of devices, raises TypeError). On a CUDA device the buffer is a
  CUDA tensor: the averaging copies it to the host as it closes a round (every
  ``algorithm.period`` steps) and writes merges back as it applies them, so a
  step without either costs no copy.

Threads: ``torch.set_num_threads(n)`` does not reach OpenBLAS, the BLAS that
Debian's PyTorch calls for its matrix products, which keeps one thread per
core and spins them between calls. Those spinning threads take the CPU that
the averaging's I/O thread needs to merge in the background, and steps wait
for merges (4 processes on 2 cores: idle 11 % against 2 % with OpenBLAS at
one thread). The Averager warns when OpenBLAS runs more threads than torch;
``tether.set_blas_threads(torch.get_num_threads())`` (or
``OPENBLAS_NUM_THREADS`` in the environment) aligns them.

Errors keep the runtime's text: ConfigError (a ValueError naming the JSON
path, or the node id), StartRefused (a ValueError: a peer runs another
config), PeerLost / NoQuorum / Excluded / NetError (RuntimeErrors) from the
network.
"""
import ctypes as _ctypes
import json as _json
import os as _os
import warnings as _warnings

from ._tether import ConfigError, Excluded, NetError, NoQuorum, PeerLost, StartRefused
from . import _tether

__all__ = ["Averager", "ConfigError", "Excluded", "NetError", "NoQuorum", "PeerLost", "StartRefused",
           "blas_threads", "set_blas_threads"]

_OPENBLAS = []   # [the loaded OpenBLAS as a ctypes library, or None], looked up once


def _openblas():
    """The OpenBLAS this process has loaded (torch's dependency), or None."""
    if not _OPENBLAS:
        lib = None
        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "openblas" in line and ".so" in line}
            for path in sorted(paths):
                try:
                    cand = _ctypes.CDLL(path)   # already loaded: the same copy
                    cand.openblas_get_num_threads.restype = _ctypes.c_int
                    lib = cand
                    break
                except (OSError, AttributeError):
                    continue
        except OSError:   # no /proc: not Linux
            pass
        _OPENBLAS.append(lib)
    return _OPENBLAS[0]


def blas_threads():
    """OpenBLAS's thread count in this process, or None when it has not loaded OpenBLAS."""
    lib = _openblas()
    return None if lib is None else int(lib.openblas_get_num_threads())


def set_blas_threads(n):
    """Sets OpenBLAS's thread count (``torch.set_num_threads`` does not; see the
    module's notes on threads). Returns the count before the call, or None
    (and does nothing) when the process has not loaded OpenBLAS."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_blas_threads: expected at least 1 thread, got {n}")
    lib = _openblas()
    if lib is None:
        return None
    before = int(lib.openblas_get_num_threads())
    lib.openblas_set_num_threads(_ctypes.c_int(n))
    return before


def _unique(params):
    out, seen = [], set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class Averager:
    """Averages the given parameters with the other nodes of ``config``'s cluster.

    params: an iterable of tensors (``model.parameters()``), float32, all on the
    CPU or all on one CUDA device.
    config: a config file path, or a dict in the config file's layout.
    node: this process's node id in ``cluster.peers``.
    set: overrides "json.path=value", as ``tether train --set``.
    """

    def __init__(self, params, config, node=0, set=(), _callbacks=False):
        # _callbacks (tests): CPU tensors through the path CUDA tensors take
        # (the runtime reads and writes them through callables)
        import torch

        self.params = _unique(params)
        if not self.params:
            raise ValueError("params: no parameters to average")
        for i, p in enumerate(self.params):
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"params[{i}]: expected a torch.Tensor, got {type(p).__name__}")
            if p.device.type not in ("cpu", "cuda"):
                raise TypeError(f"params[{i}]: on {p.device}; tether.Averager supports CPU and CUDA tensors")
            if p.device != self.params[0].device:
                raise TypeError(f"params[{i}]: on {p.device}, params[0] on {self.params[0].device}: "
                                "every parameter must be on one device")
            if p.dtype != torch.float32:
                raise TypeError(f"params[{i}]: dtype {p.dtype}; tether.Averager supports float32 only")
            if p.is_sparse:
                raise TypeError(f"params[{i}]: sparse tensors are not supported")
        if isinstance(config, dict):
            text, is_path = _json.dumps(config), False
        elif isinstance(config, (str, _os.PathLike)):
            text, is_path = _os.fspath(config), True
        else:
            raise TypeError(f"config: expected a file path or a dict, got {type(config).__name__}")
        count = sum(p.numel() for p in self.params)
        device = self.params[0].device
        blas = blas_threads()
        if device.type == "cpu" and blas is not None and blas > torch.get_num_threads():
            _warnings.warn(f"OpenBLAS runs {blas} threads, torch {torch.get_num_threads()} "
                           "(torch.set_num_threads does not reach OpenBLAS): its spinning threads take the CPU "
                           "the averaging merges with, and steps wait for merges. "
                           "tether.set_blas_threads(torch.get_num_threads()) or OPENBLAS_NUM_THREADS aligns them.",
                           RuntimeWarning, stacklevel=2)
        flat = torch.empty(count, dtype=torch.float32, device=device)
        with torch.no_grad():
            offset = 0
            for p in self.params:
                n = p.numel()
                flat[offset:offset + n].copy_(p.detach().reshape(-1))
                offset += n
        # The core agrees on node 0's values and writes them into flat.
        if device.type == "cpu" and not _callbacks:
            self._core = _tether.Averager(text, is_path, list(set), int(node), flat.numpy())
        else:
            # The runtime's host vectors come as NumPy views valid for the
            # call: x_i is copied out as a round closes, results copied in
            # as merges are applied (torch.no_grad: flat's views are leaves).
            def read(dst):
                with torch.no_grad():
                    torch.from_numpy(dst).copy_(flat)

            def write(src):
                with torch.no_grad():
                    flat.copy_(torch.from_numpy(src))

            def add(c):
                with torch.no_grad():
                    flat.add_(torch.from_numpy(c).to(device))

            self._core = _tether.Averager(text, is_path, list(set), int(node), (read, write, add), count)
        self.flat = flat
        offset = 0
        for p in self.params:
            n = p.numel()
            p.data = flat[offset:offset + n].view(p.shape)
            offset += n

    def step(self, images=0, loss=None, correct=None, lr=None, epoch=0):
        """One local step done (call it after ``opt.step()``). Closes a round every
        ``algorithm.period`` steps, applies the merges that arrived, may wait.
        The optional figures go into the metrics record. Returns False once the
        cluster stops (a peer left gracefully, or with clocked rounds the run
        ended: ``ended``): end the loop and call finish()."""
        self._check_views()
        return self._core.step(int(images), None if loss is None else float(loss),
                               None if correct is None else int(correct),
                               None if lr is None else float(lr), int(epoch))

    def finish(self, test_acc=None):
        """Drains the rounds in flight; every node ends with the same parameters
        (unless the cluster stopped early). Writes the final metrics record."""
        self._check_views()
        self._core.finish(None if test_acc is None else float(test_acc))

    def log_eval(self, test_acc, test_loss=None, epoch=0):
        """Records an evaluation (an "eval" record: the dashboard's test accuracy)."""
        self._core.log_eval(float(test_acc), None if test_loss is None else float(test_loss), int(epoch))

    def metrics(self):
        """The latest metrics record as a dict (step, round, idle_frac, ...)."""
        return _json.loads(self._core.metrics())

    @property
    def steps(self):
        return self._core.steps

    @property
    def stop_requested(self):
        return self._core.stop_requested

    @property
    def stop_reason(self):
        return self._core.stop_reason

    @property
    def ended(self):
        """Clocked rounds (algorithm.round_ms, period "auto"): another node ran
        all its steps and the run ended at a common cut (step() returned False);
        finish() then leaves every node with the same parameters."""
        return self._core.ended

    @property
    def log_path(self):
        return self._core.log_path

    def _check_views(self):
        # A parameter whose .data was replaced no longer lives in the buffer:
        # its updates would be lost without a word.
        base = self.flat.data_ptr()
        end = base + self.flat.numel() * 4
        for i, p in enumerate(self.params):
            if not (base <= p.data_ptr() < end):
                raise RuntimeError(f"params[{i}]: no longer a view of the Averager's buffer (its .data was "
                                   "replaced after tether.Averager was created); its updates would not be averaged")
