"""The cost of second order, measured: time per meta-iteration and the memory one meta-gradient
needs, against the number of inner steps, for every algorithm asked for.

Each cell of the grid (algorithm x inner steps) is the default sinusoid protocol (MLP 40-40, MSE,
K = 10 shots and 10 query points, the meta-batch given) built as ``MetaLearner(config, device)``,
exactly as ``maml-tui train`` and ``maml-tui bench`` build it, with the backend ``auto`` picks.

Time
    ``learner.outer_step(metrics=False)`` (task sampling, the meta-gradient and the Adam step),
    after warm-up, timed one call at a time until ``seconds`` have passed and at least
    ``min_repeats`` calls were timed; the median is reported, with the count.

Memory: ``peak_bytes``, the number plotted and tabled
    The peak, above the level at the start, of the bytes the allocator hands out during one
    ``algorithm.meta_step(params, batch)`` on a batch sampled beforehand. On CPU and on CUDA alike it
    is read from the allocator's own alloc/free records (``torch.profiler`` with
    ``profile_memory=True``), summed in time order, for the measured device only. It counts every
    tensor the meta-gradient makes, whoever holds it: the graph autograd keeps through the inner
    steps, the per-task adapted weights, the transient graphs of ``torch.func.grad`` and ``jvp``
    inside iMAML's Hessian-vector products, the conjugate-gradient vectors, the hand-written
    kernels' intermediates. It is fair across algorithms because it is one allocator, one window
    and one batch for all of them, and it does not depend on how an algorithm computes its
    gradient (autograd graph, ``torch.func`` transform or hand-written backward).

Memory: ``saved_bytes``, a second view, in the JSON
    The peak bytes of tensors autograd saves for backward (``saved_tensors_hooks``, each storage
    counted once), :class:`SavedTensorBytes`. It is the textbook "MAML keeps the graph of every
    inner step" number, but it cannot be the headline one here, for two reasons found while
    building this: ``torch.func.grad``/``vjp`` refuse to run while saved-tensor hooks are set
    (``RuntimeError: torch.func.{grad, vjp, jacrev, hessian} don't yet support saved tensor
    hooks``), so iMAML's HVPs (and any cell on the ``torch.func`` backend) cannot be seen this way
    at all (``saved_bytes`` is None there, with the reason); and the ``fused`` backend's custom
    autograd Function keeps its tensors on ``ctx`` rather than through ``save_for_backward``,
    which the hooks do not see either. Where the algorithm runs no autograd (Reptile, HF-MAML on the
    closed-form kernels, both under ``no_grad``) it is a true 0.

Memory: ``cuda_peak_bytes``, CUDA only
    ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()`` around one ``meta_step``
    after ``reset_peak_memory_stats()`` (the caching allocator's figure, rounded to its blocks);
    None elsewhere.

Torch only: the CLI (``maml-tui bench --cost``) renders what :func:`run_cost` returns.
"""

from __future__ import annotations

import os
import statistics
import time
import weakref
from dataclasses import asdict, dataclass, field

import torch

# kineto prints two lines on stderr at every profiler start and stop (its "USDT" level, 5); it reads
# this when the profiler first starts, so setting it here quietens it unless the user chose a level
os.environ.setdefault("KINETO_LOG_LEVEL", "6")

STEPS = (1, 5, 10, 20, 50, 100)
ALGORITHMS = ("maml", "fomaml", "reptile", "imaml", "hfmaml")
MAX_STEPS = 1000


class _Saved:
    """What autograd keeps instead of a saved tensor while :class:`SavedTensorBytes` is on."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorBytes:
    """Counts the bytes of the tensors autograd saves for backward while the context is open.

    The pack hook adds the bytes of the tensor's storage (each storage once, keyed by its data
    pointer, however many times it is saved) to a live count and returns a small handle; when
    autograd lets go of the last handle on a storage (the graph is freed after backward, or
    dropped), its bytes are subtracted. ``peak`` is the largest live count seen, ``live`` the
    count now. ``torch.func`` transforms refuse to run under these hooks (a RuntimeError).
    """

    def __init__(self):
        self.live = 0
        self.peak = 0
        self.packs = 0
        self._holders: dict[int, list[int]] = {}  # storage key -> [handles alive, bytes]
        self._hooks = None

    def _release(self, key: int) -> None:
        entry = self._holders.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._holders[key]

    def _pack(self, tensor: torch.Tensor) -> _Saved:
        self.packs += 1
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        entry = self._holders.get(key)
        if entry is None:
            entry = self._holders[key] = [0, storage.nbytes()]
            self.live += entry[1]
            self.peak = max(self.peak, self.live)
        entry[0] += 1
        handle = _Saved(tensor)
        weakref.finalize(handle, self._release, key)
        return handle

    @staticmethod
    def _unpack(handle: _Saved) -> torch.Tensor:
        return handle.tensor

    def __enter__(self) -> "SavedTensorBytes":
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self._hooks = None


def _memory_device_type(device: torch.device):
    kinds = torch._C._autograd.DeviceType
    return kinds.CUDA if device.type == "cuda" else kinds.CPU


def peak_allocated_bytes(fn, device: str | torch.device = "cpu") -> tuple[int, object]:
    """``(peak, result)``: run ``fn()`` and return the peak, above the level at its start, of the
    bytes allocated on ``device`` while it ran (the allocator's alloc/free records from
    ``torch.profiler``, summed in time order), and what ``fn`` returned."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, profile_memory=True) as prof:
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    wanted = _memory_device_type(device)
    records = [e for e in prof.profiler.kineto_results.events()
               if e.name() == "[memory]" and e.device_type() == wanted
               and (device.type != "cuda" or device.index is None or e.device_index() == device.index)]
    records.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for record in records:
        live += record.nbytes()  # allocations positive, frees negative
        peak = max(peak, live)
    return peak, result


def saved_tensor_bytes(fn) -> tuple[int | None, str]:
    """``(peak saved bytes, "")`` for ``fn()`` under :class:`SavedTensorBytes`, or ``(None, why)``
    when the hooks cannot be used (``torch.func`` transforms refuse them)."""
    counter = SavedTensorBytes()
    try:
        with counter:
            fn()
    except RuntimeError as error:
        if "saved tensor hooks" in str(error):
            return None, "torch.func transforms refuse saved-tensor hooks"
        raise
    return counter.peak, ""


def cuda_peak_bytes(fn, device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


@dataclass
class CostCell:
    algorithm: str
    inner_steps: int
    backend: str  # what the algorithm says computes it
    ms_per_meta_it: float  # median over the timed repeats
    repeats: int
    ms_all: list[float] = field(default_factory=list)
    peak_bytes: int = 0  # allocator peak above the start during one meta_step
    saved_bytes: int | None = None  # autograd's saved tensors (hooks), None where they cannot run
    saved_note: str = ""
    cuda_peak_bytes: int | None = None
    threads: int = 0  # torch threads the learner ran on (it picks 1 for small CPU workloads)

    def to_dict(self) -> dict:
        return asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_cell(algorithm: str, inner_steps: int, seconds: float = 1.0, device: str = "cpu", meta_batch_size: int = 25,
                 hidden: tuple[int, ...] = (40, 40), shots: int = 10, query: int = 10, min_repeats: int = 3,
                 time_it: bool = True) -> CostCell:
    """One cell: time per meta-iteration and the memory of one meta-gradient (see the module)."""
    from engine.config import AlgoConfig, ModelConfig, RunConfig, TrainConfig
    from engine.trainer import MetaLearner

    config = RunConfig(model=ModelConfig(hidden=tuple(hidden)), algo=AlgoConfig(name=algorithm, inner_steps=inner_steps),
                       train=TrainConfig(meta_batch_size=meta_batch_size, shots=shots, query=query, log_every=10**9))
    learner = MetaLearner(config, device=device)
    target = learner.device
    backend = learner.algorithm.backend_choice(shots)

    def meta_step(batch):
        return learner.algorithm.meta_step(learner.params, batch)

    # warm-up (first calls pay for kernels, caches and lazy imports), then memory, then time
    learner.outer_step(metrics=False)
    batch = learner.sample_batch()
    meta_step(batch)
    _sync(target)
    peak, _ = peak_allocated_bytes(lambda: meta_step(batch), target)
    saved, note = saved_tensor_bytes(lambda: meta_step(batch))
    cuda_peak = cuda_peak_bytes(lambda: meta_step(batch), target)
    del batch

    times = []
    if time_it:
        start = time.perf_counter()
        while len(times) < min_repeats or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            learner.outer_step(metrics=False)
            _sync(target)
            times.append(1000 * (time.perf_counter() - t0))
    return CostCell(algorithm, inner_steps, backend, statistics.median(times) if times else float("nan"), len(times),
                    times, peak, saved, note, cuda_peak, torch.get_num_threads())


def run_cost(steps=STEPS, algorithms=ALGORITHMS, seconds: float = 1.0, device: str = "cpu", meta_batch_size: int = 25,
             hidden: tuple[int, ...] = (40, 40), progress=None) -> list[CostCell]:
    """Every cell of ``algorithms`` x ``steps``; ``progress(algorithm, steps)`` is called before each."""
    cells = []
    threads = torch.get_num_threads()
    try:
        for algorithm in algorithms:
            for count in steps:
                if progress is not None:
                    progress(algorithm, count)
                cells.append(measure_cell(algorithm, count, seconds, device, meta_batch_size, hidden))
    finally:
        torch.set_num_threads(threads)  # the learner picks its own thread count
    return cells
