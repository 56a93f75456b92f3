"""The explorer's meta-gradient panel and sharpness indicator, as plain numbers.

:func:`compare_meta_gradients` computes, on one meta-batch at one theta, the exact second-order MAML
meta-gradient (the run's inner rate and steps, model and loss) and the first-order (FOMAML), Reptile,
iMAML and finite-difference (Hessian-free MAML) ones, and for each its cosine similarity to the exact
one, its norm ratio ``||g|| / ||g_exact||``, the wall time it took and the peak memory it allocated
(as ``maml-tui bench --cost`` measures it: :func:`engine.cost.peak_allocated_bytes`).

:func:`task_sharpness` is lambda_max of one task's support-loss Hessian by power iteration
(:func:`engine.hessian.sharpness`), the number that says whether repeating an inner step of rate
alpha converges: on a quadratic of curvature lambda a step multiplies the error by ``|1 - alpha
lambda|``, which exceeds 1 once ``alpha lambda > 2``.
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


def measured(function, device: torch.device | str = "cpu"):
    """``(result, seconds, peak bytes)`` of ``function()``: the wall time, and the most bytes the
    allocator had handed out above where it started (:func:`engine.cost.peak_allocated_bytes`, the
    ruler of ``maml-tui bench --cost``, which sees torch.func's graphs and hand-written kernels alike).
    The time is of a second, unprofiled call."""
    from engine.cost import peak_allocated_bytes

    peak, _ = peak_allocated_bytes(function, device)
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start, peak


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
    "peak_bytes", "backend", "reason" ("" when it ran)}``, against the exact second-order MAML
    meta-gradient of ``model`` and ``loss`` at ``params`` on ``batch``.

    Every algorithm runs on the closed_form backend where it accepts the model (the fused kernel
    takes only MAML's one-step case, so the rows would not compare like with like) and on the
    default one otherwise."""
    from engine.algorithms import make_algorithm
    from engine.fast_mlp import refuses

    params = {n: v.detach() for n, v in params.items()}
    rows, exact = [], None
    for name, label in algorithms:
        row: dict[str, Any] = {"algorithm": name, "label": label, "cosine": math.nan, "norm": math.nan,
                               "norm_ratio": math.nan, "seconds": math.nan, "peak_bytes": None, "backend": "", "reason": ""}
        try:
            algorithm = make_algorithm(name, model, inner_lr=inner_lr, inner_steps=inner_steps, loss=loss)
            loop = algorithm.inner_loop(params)
            if refuses(algorithm.model, algorithm.loss, loop) is None:
                algorithm.backend = "closed_form"
            row["backend"] = algorithm.backend_choice(batch.x_support.shape[1])
            if row["backend"].startswith("refused"):
                raise ValueError(row["backend"])
            (_, grads), seconds, peak = measured(lambda: algorithm.meta_gradient(params, batch), batch.x_support.device)
            if any(not bool(torch.isfinite(grads[n]).all()) for n in params if n in grads):
                raise ValueError("its meta-gradient is not finite here")
        except Exception as error:  # noqa: BLE001 - one line of why, never a crash of the panel
            row["reason"] = _sentence(error)
            rows.append(row)
            continue
        names = [n for n in params if n in grads]
        flat = _flat(grads, names)
        row.update(seconds=seconds, peak_bytes=peak, norm=float(flat.norm()))
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
