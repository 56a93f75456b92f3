"""The explorer's meta-gradient panel and sharpness indicator, as plain numbers.

:func:`compare_meta_gradients` computes, on one meta-batch at one theta, the exact second-order MAML
meta-gradient (the run's inner rate and steps, model and loss) and the first-order (FOMAML), Reptile,
iMAML and finite-difference (Hessian-free MAML) ones, and for each its cosine similarity to the exact
one, its norm ratio ``||g|| / ||g_exact||``, the wall time it took and the peak bytes of the tensors
autograd saved for backward while it ran (:class:`SavedTensorMeter`).

:func:`task_sharpness` is lambda_max of one task's support-loss Hessian by power iteration
(:func:`engine.hessian.sharpness`), the number that says whether repeating an inner step of rate
alpha converges: on a quadratic of curvature lambda a step multiplies the error by ``|1 - alpha
lambda|``, which exceeds 1 once ``alpha lambda > 2``.

Self-contained on purpose (a cost module with the same memory measure may land elsewhere).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from engine.hessian import sharpness
from engine.tasks import TaskBatch

COMPARED = (  # (algorithm, label): the exact reference first
    ("maml", "exact MAML (2nd order)"),
    ("fomaml", "first-order MAML"),
    ("reptile", "Reptile"),
    ("imaml", "iMAML (implicit, CG)"),
    ("hfmaml", "Hessian-free (fin. diff.)"),
)
SHARPNESS_ITERATIONS = 20  # power iterations (one exact Hessian-vector product each)
SHARPNESS_SEED = 0  # the power iteration's start vector comes from this seed (the same number every time)


class SavedTensorMeter:
    """Peak bytes of the tensors autograd saves for backward, inside ``with meter:``.

    Each storage counts once however many saved tensors view it; its bytes are subtracted when the
    last of them is released (the graph freed). torch.func transforms refuse saved-tensor hooks
    (they raise a RuntimeError that :meth:`refused` recognises): what they save is not seen."""

    def __init__(self) -> None:
        self.live: dict[tuple, list[int]] = {}  # storage -> [bytes, saved tensors holding it]
        self.current = self.peak = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    def _pack(self, tensor: torch.Tensor) -> "_Saved":
        storage = tensor.untyped_storage()
        key = (tensor.device.type, tensor.device.index, storage.data_ptr())
        entry = self.live.get(key)
        if entry is None:
            self.live[key] = [storage.nbytes(), 1]
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        else:
            entry[1] += 1
        return _Saved(self, key, tensor.detach())  # an alias without its graph: no cycle through a saved output

    @staticmethod
    def _unpack(saved: "_Saved") -> torch.Tensor:
        return saved.tensor

    def release(self, key: tuple) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del self.live[key]
            self.current -= entry[0]

    @staticmethod
    def refused(error: BaseException) -> bool:
        return isinstance(error, RuntimeError) and "saved tensor hooks" in str(error)


class _Saved:
    __slots__ = ("meter", "key", "tensor")

    def __init__(self, meter: SavedTensorMeter, key: tuple, tensor: torch.Tensor) -> None:
        self.meter, self.key, self.tensor = meter, key, tensor

    def __del__(self) -> None:
        self.meter.release(self.key)


def measured(function):
    """``(result, seconds, peak saved bytes or None)`` of ``function()``; None where torch.func hid them."""
    meter = SavedTensorMeter()
    start = time.perf_counter()
    try:
        with meter:
            result = function()
        return result, time.perf_counter() - start, meter.peak
    except RuntimeError as error:
        if not meter.refused(error):
            raise
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start, None


def _flat(grads: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].detach().reshape(-1).double() for n in names])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else math.nan


def _sentence(error: Exception) -> str:
    text = str(error).strip().split("\n")[0] or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def compare_meta_gradients(model, loss, params: dict[str, torch.Tensor], batch: TaskBatch, inner_lr: float,
                           inner_steps: int, algorithms=COMPARED) -> list[dict[str, Any]]:
    """One row per algorithm: ``{"algorithm", "label", "cosine", "norm", "norm_ratio", "seconds",
    "saved_bytes" (None: not measurable), "backend", "reason" ("" when it ran)}``, against the exact
    second-order MAML meta-gradient of ``model`` and ``loss`` at ``params`` on ``batch``.

    Every algorithm runs on the closed_form backend where it accepts the model (autograd through an
    MLP's hand-derived gradients, whose saved tensors can be counted; the fused kernels save none
    because they build no graph) and on the default one otherwise."""
    from engine.algorithms import make_algorithm
    from engine.fast_mlp import refuses

    params = {n: v.detach() for n, v in params.items()}
    rows, exact = [], None
    for name, label in algorithms:
        row: dict[str, Any] = {"algorithm": name, "label": label, "cosine": math.nan, "norm": math.nan,
                               "norm_ratio": math.nan, "seconds": math.nan, "saved_bytes": None, "backend": "", "reason": ""}
        try:
            algorithm = make_algorithm(name, model, inner_lr=inner_lr, inner_steps=inner_steps, loss=loss)
            loop = algorithm.inner_loop(params)
            if refuses(algorithm.model, algorithm.loss, loop) is None:
                algorithm.backend = "closed_form"
            row["backend"] = algorithm.backend_choice(batch.x_support.shape[1])
            if row["backend"].startswith("refused"):
                raise ValueError(row["backend"])
            (_, grads), seconds, saved = measured(lambda: algorithm.meta_gradient(params, batch))
            if any(not bool(torch.isfinite(grads[n]).all()) for n in params if n in grads):
                raise ValueError("its meta-gradient is not finite here")
        except Exception as error:  # noqa: BLE001 - one line of why, never a crash of the panel
            row["reason"] = _sentence(error)
            rows.append(row)
            continue
        names = [n for n in params if n in grads]
        flat = _flat(grads, names)
        row.update(seconds=seconds, saved_bytes=saved, norm=float(flat.norm()))
        if exact is None and name == algorithms[0][0]:
            exact = flat
        if exact is not None and flat.shape == exact.shape:
            row["cosine"] = cosine(flat, exact)
            row["norm_ratio"] = float(flat.norm() / exact.norm()) if float(exact.norm()) > 0 else math.nan
        rows.append(row)
    return rows


def task_sharpness(model, loss, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, names,
                   step: int | None = None, iterations: int = SHARPNESS_ITERATIONS) -> float:
    """lambda_max of one task's support loss at ``params`` w.r.t. ``names`` (``x``, ``y``: one task,
    (1, points, in)); the start vector is seeded, so the same task and theta give the same number."""
    generator = torch.Generator(device=x.device).manual_seed(SHARPNESS_SEED)
    value = sharpness(model, loss, params, x, y, tuple(names), iterations, generator, step)
    return float(value.reshape(-1)[0])
