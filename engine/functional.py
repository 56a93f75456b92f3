"""The functional core: what an algorithm asks for (:class:`InnerLoop`) and the general path that does it.

An algorithm describes one inner loop as plain data: which parameters adapt, the inner rate of
every adapted parameter at every step (a float, a learned scalar or a learned per-entry tensor),
whether the meta-gradient is second order, how the outer loss is formed from the query losses
after each step, and an optional extra inner-loss term. Everything is batched over tasks:
parameters are shared (the meta-parameters theta, their own shape) or per task (a leading
``tasks`` dimension, the adapted theta'); one call handles a whole meta-batch with no Python
loop over tasks.

This module holds the general path, which runs any model, any loss and any inner loop:

* :func:`func_gradients`: ``vmap(grad_and_value(task_loss))`` over tasks, as in the functorch
  MAML examples; an outer ``backward`` flows through ``grad``, so the meta-gradient is exactly
  second order (or first order when the inner gradients are taken as constants).
* :func:`dense_meta_loss` / :func:`dense_adapt`: the inner SGD loop, written once, over any
  function that gives per-task inner gradients (``func_gradients`` or the hand-derived MLP
  gradients of ``engine.fast_mlp``).

``engine.backends`` chooses between this path and the fast ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from engine.losses import Loss
from engine.model import Model, Params

Rate = float | Tensor  # a float, a learned scalar (0-dim) or a learned tensor shaped like the parameter
Regulariser = Callable[[Params, Params], Tensor]  # (adapted params of one task, theta) -> extra inner loss


@dataclass(frozen=True)
class Proximal:
    """The proximal term ``lam/2 * sum ||phi_n - theta_n||^2`` over ``names`` (iMAML's inner loss),
    a :data:`Regulariser` whose form is known, so a hand-derived path can add its gradient
    ``lam * (phi - theta)`` instead of refusing an opaque term."""

    lam: float
    names: tuple[str, ...]

    def __call__(self, adapted: Params, theta: Params) -> Tensor:
        return 0.5 * self.lam * sum((adapted[n] - theta[n]).pow(2).sum() for n in self.names)


@dataclass(frozen=True)
class InnerLoop:
    """One inner loop, as an algorithm asks for it."""

    names: tuple[str, ...]  # the parameters that adapt
    rates: tuple[Mapping[str, Rate], ...]  # per inner step: the rate of every adapted parameter
    second_order: bool = True  # differentiate through the inner gradients (False: take them as constants)
    step_weights: tuple[float, ...] | None = None  # outer loss = sum_s w_s * query loss after step s+1; None: last step only
    regulariser: Regulariser | None = None  # an extra inner-loss term, e.g. a proximal term (iMAML)
    anchor: Params | None = None  # the second argument of ``regulariser`` (theta)

    @property
    def steps(self) -> int:
        return len(self.rates)

    def weights(self) -> tuple[float, ...]:
        """The query-loss weight after each inner step 1..S (the last one alone by default)."""
        if self.step_weights is not None:
            if len(self.step_weights) != self.steps:
                raise ValueError(f"{len(self.step_weights)} step weights for {self.steps} inner steps")
            return tuple(self.step_weights)
        return (0.0,) * (self.steps - 1) + (1.0,) if self.steps else ()

    def scalar_rates(self) -> bool:
        """True when every rate is one number per parameter tensor (a float or a 0-dim tensor)."""
        return all(not isinstance(r, Tensor) or r.dim() == 0 for rates in self.rates for r in rates.values())


@dataclass
class InnerResult:
    """What a meta-loss computation saw on the way (detached; filled when recording)."""

    params: Params = field(default_factory=dict)  # the adapted parameters, per task (dense paths only)
    support_losses: list[Tensor] = field(default_factory=list)  # per step, (tasks,), before the step
    grad_norms: list[Tensor] = field(default_factory=list)  # per step, (tasks,)


@dataclass
class AdaptHistory:
    """Every step of an adaptation: index s holds the state after s inner steps (s = 0..steps)."""

    params: list[Params]  # per step; per-task tensors (tasks, *shape)
    support_loss: list[Tensor]  # per step, (tasks,)
    query_loss: list[Tensor] | None  # per step, (tasks,), when query data was given
    grad_norm: list[Tensor]  # per step, (tasks,): norm of the support gradient at that step
    query_metrics: list[dict[str, Tensor]] = field(default_factory=list)  # per step, the loss's extra metrics
    displacement: Params | None = None  # sum of every applied update, per task (Reptile's direction)
    final_params: Params = field(default_factory=dict)  # the parameters after the last step

    @property
    def steps(self) -> int:
        return len(self.support_loss) - 1


class Gradients(Protocol):
    """Per-task support loss (tasks,) and the gradients of the adapted parameters, each (tasks, *shape)."""

    def __call__(self, model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, loop: InnerLoop,
                 step: int, create_graph: bool) -> tuple[Tensor, Params]: ...


def sgd_update(value: Tensor, grad: Tensor, rate: Rate) -> Tensor:
    """value - rate * grad in one differentiable op."""
    if isinstance(rate, Tensor):
        return torch.addcmul(value, rate, grad, value=-1.0)
    return torch.sub(value, grad, alpha=rate)


def gradient_norm(grads: Mapping[str, Tensor]) -> Tensor:
    """Per-task L2 norm over all gradient tensors: {name: (tasks, ...)} -> (tasks,)."""
    squares = [g.pow(2).flatten(1).sum(1) for g in grads.values()]
    return torch.stack(squares).sum(0).sqrt()


def task_losses(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, step: int | None = None) -> Tensor:
    """Per-task loss (tasks,) of shared or per-task ``params`` on (tasks, points, ...) data."""
    return loss.per_task(model.forward(params, x, step), y)


def func_gradients(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, loop: InnerLoop,
                   step: int, create_graph: bool) -> tuple[Tensor, Params]:
    """The general path: vmap over tasks of grad of one task's inner loss."""
    names = loop.names
    adapt = {n: params[n] for n in names}
    frozen = {n: v for n, v in params.items() if n not in adapt}
    anchor = loop.anchor or {}

    def task_loss(adapt: Params, frozen: Params, anchor: Params, x: Tensor, y: Tensor):
        merged = {**frozen, **adapt}
        data = loss.per_task(model.forward(merged, x, step), y)
        total = data if loop.regulariser is None else data + loop.regulariser(merged, anchor)
        return total, data

    dims = lambda group: {n: 0 if model.is_batched(n, v) else None for n, v in group.items()}  # noqa: E731
    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        grads, (_, data) = vmap(grad_and_value(task_loss, has_aux=True),
                                in_dims=(dims(adapt), dims(frozen), None, 0, 0))(adapt, frozen, anchor, x, y)
    if not create_graph:
        data, grads = data.detach(), {n: g.detach() for n, g in grads.items()}
    return data, grads


def _query_loss(model: Model, loss: Loss, params: Params, x: Tensor, y: Tensor, step: int) -> Tensor:
    return loss.per_task(model.forward(params, x, step), y).mean()


def dense_meta_loss(gradients: Gradients, model: Model, loss: Loss, params: Params, batch, loop: InnerLoop,
                    record: bool = False) -> tuple[Tensor, Tensor, InnerResult]:
    """``(outer loss, query loss after the last step, what was seen)`` for a meta-batch.

    ``params`` is where the inner loop starts (theta, plus anything the algorithm starts per task,
    such as CAVIA's context); the outer loss is differentiable w.r.t. it.
    """
    fast, result = dict(params), InnerResult()
    weights, objective, final = loop.weights(), None, None
    for s in range(loop.steps):
        support, grads = gradients(model, loss, fast, batch.x_support, batch.y_support, loop, s, loop.second_order)
        if record:
            result.support_losses.append(support.detach())
            result.grad_norms.append(gradient_norm({n: g.detach() for n, g in grads.items()}))
        fast = {**fast, **{n: sgd_update(fast[n], grads[n], loop.rates[s][n]) for n in loop.names}}
        if weights[s] or s == loop.steps - 1:
            query = _query_loss(model, loss, fast, batch.x_query, batch.y_query, s + 1)
            final = query
            if weights[s]:
                objective = weights[s] * query if objective is None else objective + weights[s] * query
    if loop.steps == 0:
        objective = final = _query_loss(model, loss, fast, batch.x_query, batch.y_query, 0)
    result.params = fast
    return objective, final, result


def dense_adapt(gradients: Gradients, model: Model, loss: Loss, params: Params, x_support: Tensor, y_support: Tensor,
                loop: InnerLoop, x_query: Tensor | None = None, y_query: Tensor | None = None,
                keep_params: bool = True, final_gradient: bool = True, displacement: bool = False) -> AdaptHistory:
    """Adapt without differentiating through it, keeping every step (the explorer and evaluation).

    ``final_gradient`` also measures the support gradient after the last step (its norm is part of
    the history); ``displacement`` sums every applied update exactly, per task.
    """
    has_query = x_query is not None and y_query is not None
    history = AdaptHistory([], [], [] if has_query else None, [])
    tasks = x_support.shape[0]
    moved: Params = {}
    with torch.no_grad():
        fast = dict(params)
        for s in range(loop.steps + 1):
            if keep_params:
                history.params.append({n: model.per_task(n, v, tasks) for n, v in fast.items()})
            if has_query:
                prediction = model.forward(fast, x_query, s)
                history.query_loss.append(loss.per_task(prediction, y_query))
                history.query_metrics.append(loss.metrics(prediction, y_query))
            if s == loop.steps and not final_gradient:
                history.support_loss.append(loss.per_task(model.forward(fast, x_support, s), y_support))
                break
            support, grads = gradients(model, loss, fast, x_support, y_support, loop, s, False)
            history.support_loss.append(support)
            history.grad_norm.append(gradient_norm(grads))
            if s == loop.steps:
                break
            if displacement:  # the applied updates summed as they are made: no theta - phi cancellation
                updates = {n: grads[n] * loop.rates[s][n] for n in loop.names}
                moved = {n: moved[n] + updates[n] if n in moved else updates[n] for n in loop.names}
                fast = {**fast, **{n: fast[n] - updates[n] for n in loop.names}}
            else:
                fast = {**fast, **{n: sgd_update(fast[n], grads[n], loop.rates[s][n]) for n in loop.names}}
    history.final_params = fast
    if not keep_params:
        history.params = [{}] * (loop.steps + 1)
    if displacement:
        history.displacement = {n: model.per_task(n, v, tasks) for n, v in moved.items()}
    return history
