"""Second-order quantities of a task's support loss, batched over tasks: Hessian-vector products
(exact and by finite differences), conjugate gradient on ``(I + H / lambda) g = b`` and the
sharpness (the Hessian's largest eigenvalue).

Everything works on the parameter dicts of the functional core. A *vector* is a dict shaped like
the adapted parameters with a leading ``tasks`` dimension (one vector per task); the parameters
themselves may be shared (theta) or per task. Nothing here builds a graph that outlives the call:
the results are for iMAML's and Hessian-free MAML's meta-gradients and for the explorer.

* :func:`hvp` is exact: ``torch.func.jvp`` of ``torch.func.grad`` (forward over reverse), one
  ``vmap`` over tasks, so one product costs about two gradients and holds nothing afterwards.
* :func:`hvp_double_backward` is the same product by double backward (``autograd.grad`` of
  ``<grad, v>``), kept as an independent reference.
* :func:`fd_hvp` is the finite difference of two gradients (the lecture notes' Hessian-free
  MAML): ``(grad L(p + r v) - grad L(p - r v)) / 2r``; its error is ``O(r^2)`` until round-off,
  ``O(eps / r)``, takes over.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from engine.losses import Loss
from engine.model import Model, Params

Vectors = dict[str, Tensor]  # per task: {name: (tasks, *shape)}


def _dims(model: Model, group: Params) -> dict[str, int | None]:
    return {n: 0 if model.is_batched(n, v) else None for n, v in group.items()}


def _task_loss(model: Model, loss: Loss, step: int | None):
    def task_loss(adapt: Params, frozen: Params, x: Tensor, y: Tensor) -> Tensor:
        return loss.per_task(model.forward({**frozen, **adapt}, x, step), y)
    return task_loss


def hvp(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, vectors: Vectors,
        step: int | None = None) -> Vectors:
    """``H_i v_i`` for every task ``i``: the Hessian of task i's loss on ``(x_i, y_i)`` w.r.t. the
    parameters named in ``vectors``, at ``params`` (shared or per task), times ``v_i``. Exact.
    An MLP with mean squared error takes the hand-derived gradients' double backward
    (:func:`engine.fast_mlp.mse_hvp`, the same products at a third of the time); the rest the
    ``torch.func`` one."""
    from engine import fast_mlp
    from engine.functional import InnerLoop

    if fast_mlp.refuses(model, loss, InnerLoop(names=tuple(vectors), rates=())) is None:
        return fast_mlp.mse_hvp(model, params, x, y, vectors)
    return func_hvp(model, loss, params, x, y, vectors, step)


def func_hvp(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, vectors: Vectors,
             step: int | None = None) -> Vectors:
    """The general path of :func:`hvp`: ``torch.func.jvp`` of ``grad``, vmapped over tasks (any
    model and loss)."""
    names = tuple(vectors)
    adapt = {n: params[n] for n in names}
    frozen = {n: v for n, v in params.items() if n not in adapt}
    task_loss = _task_loss(model, loss, step)

    def one(adapt: Params, frozen: Params, vector: Params, x: Tensor, y: Tensor) -> Params:
        return jvp(lambda a: grad(task_loss)(a, frozen, x, y), (adapt,), (vector,))[1]

    with torch.no_grad():
        return vmap(one, in_dims=(_dims(model, adapt), _dims(model, frozen), 0, 0, 0))(adapt, frozen, dict(vectors), x, y)


def hvp_double_backward(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, vectors: Vectors,
                        step: int | None = None) -> Vectors:
    """The same products as :func:`hvp`, by double backward through autograd (a reference)."""
    names = tuple(vectors)
    tasks = x.shape[0]
    with torch.enable_grad():
        leaves = {n: model.per_task(n, params[n].detach(), tasks).clone().requires_grad_() for n in names}
        merged = {**{n: v.detach() for n, v in params.items()}, **leaves}
        total = loss.per_task(model.forward(merged, x, step), y).sum()  # tasks are independent: one sum
        grads = torch.autograd.grad(total, [leaves[n] for n in names], create_graph=True)
        inner = sum((g * vectors[n].detach()).sum() for n, g in zip(names, grads))
        products = torch.autograd.grad(inner, [leaves[n] for n in names])
    return {n: p.detach() for n, p in zip(names, products)}


GradientsAt = Callable[[Params], Vectors]  # parameters (shared or per task) -> per-task gradients


def fd_hvp(gradients_at: GradientsAt, params: Params, vectors: Vectors, r: float, tasks: int,
           model: Model) -> Vectors:
    """``(g(p + r v) - g(p - r v)) / 2r`` with ``g = gradients_at``: the central finite difference
    of two gradients, ``H v + O(r^2)``. ``r`` is used as given (scale ``v`` first if it should be
    relative)."""
    if not r > 0:
        raise ValueError(f"the finite-difference step r must be positive, got {r}")
    plus, minus = dict(params), dict(params)
    for n, v in vectors.items():
        base = model.per_task(n, params[n], tasks)
        plus[n], minus[n] = base + r * v, base - r * v
    with torch.no_grad():
        up, down = gradients_at(plus), gradients_at(minus)
    return {n: (up[n] - down[n]) / (2 * r) for n in vectors}


def dot(a: Vectors, b: Vectors) -> Tensor:
    """Per-task inner product (tasks,)."""
    return torch.stack([(a[n] * b[n]).flatten(1).sum(1) for n in a]).sum(0)


def norm(a: Vectors) -> Tensor:
    return dot(a, a).clamp_min(0).sqrt()


def _axpy(alpha: Tensor, x: Vectors, y: Vectors) -> Vectors:
    """y + alpha * x with a per-task alpha (tasks,)."""
    return {n: y[n] + alpha.view(-1, *([1] * (x[n].dim() - 1))) * x[n] for n in y}


def conjugate_gradient(apply: Callable[[Vectors], Vectors], b: Vectors, steps: int) -> tuple[Vectors, Tensor]:
    """Solve ``A x = b`` per task with up to ``steps`` iterations of conjugate gradient from ``x = 0``;
    ``A`` is given by its products (``apply``) and symmetric. A task whose search direction meets
    non-positive curvature (``d.A d <= 0``: ``A`` is not positive definite there, as ``I + H/lam``
    is not when the Hessian has an eigenvalue below ``-lam``) stops where it is, as truncated
    Newton-CG does (Steihaug 1983), instead of stepping along a direction that would blow up.
    Returns ``x`` and the per-task relative residual ``||b - A x|| / ||b||`` of the result."""
    x = {n: torch.zeros_like(v) for n, v in b.items()}
    residual = {n: v.clone() for n, v in b.items()}
    direction = {n: v.clone() for n, v in b.items()}
    rr = dot(residual, residual)
    scale = rr.sqrt().clamp_min(torch.finfo(rr.dtype).tiny)
    active = torch.ones_like(rr, dtype=torch.bool)
    for _ in range(steps):
        active = active & (rr.sqrt() > torch.finfo(rr.dtype).eps * scale)  # solved to round-off: done
        if not bool(active.any()):
            break
        product = apply(direction)
        curvature = dot(direction, product)
        active = active & (curvature > 0)
        alpha = torch.where(active, rr / torch.where(active, curvature, torch.ones_like(curvature)), torch.zeros_like(rr))
        x = _axpy(alpha, direction, x)
        residual = _axpy(-alpha, product, residual)
        new_rr = torch.where(active, dot(residual, residual), rr)
        beta = torch.where(active, new_rr / torch.where(rr > 0, rr, torch.ones_like(rr)), torch.zeros_like(rr))
        direction = _axpy(beta, direction, residual)
        rr = new_rr
    exact = {n: b[n] - v for n, v in apply(x).items()} if steps else b
    return x, norm(exact) / scale


def sharpness(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, names: tuple[str, ...] | list[str],
              iterations: int = 20, generator: torch.Generator | None = None, step: int | None = None) -> Tensor:
    """Per task, the Hessian eigenvalue of largest magnitude of the support loss at ``params`` w.r.t.
    ``names``, by ``iterations`` power iterations of exact Hessian-vector products (a Rayleigh
    quotient of the last iterate; near a minimum the top eigenvalue, lambda_max)."""
    tasks = x.shape[0]
    shapes = {n: model.per_task(n, params[n], tasks).shape for n in names}
    like = params[names[0]]
    vector = {n: torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device) for n, shape in shapes.items()}
    value = torch.zeros(tasks, dtype=like.dtype, device=like.device)
    for _ in range(max(1, iterations)):
        length = norm(vector).clamp_min(torch.finfo(like.dtype).tiny)
        vector = {n: v / length.view(-1, *([1] * (v.dim() - 1))) for n, v in vector.items()}
        product = hvp(model, loss, params, x, y, vector, step)
        value = dot(vector, product)  # the Rayleigh quotient of a unit vector
        vector = product
    return value
