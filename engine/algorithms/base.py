"""The shared shape of every algorithm: meta-parameters in, a meta-gradient out.

An algorithm is a small variation on the functional core (``engine.functional``): which
parameters adapt in the inner loop, whether the inner gradient is differentiated (second order)
or taken as a constant (first order), and how the outer gradient is formed. The base class here is
the MAML family; subclasses flip its switches or override :meth:`Algorithm.meta_step`.

Two entry points serve everyone:

* :meth:`Algorithm.meta_step` / :meth:`Algorithm.meta_gradient`: one meta-batch -> the loss
  and a gradient shaped like the meta-parameters (the trainer feeds it to its optimizer);
* :meth:`Algorithm.adapt`: adapt a parameter set to one or many tasks' support sets, keeping every
  step's parameters, support loss, query loss and gradient norm (the explorer and evaluation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from engine import functional as F
from engine.model import MLP, Params
from engine.tasks import TaskBatch


@dataclass
class MetaStep:
    """One meta-batch's meta-gradient and the numbers the metrics are made of."""

    loss: Tensor  # scalar: the outer objective (mean query loss after adaptation)
    grads: Params  # shaped like the meta-parameters
    support_loss: Tensor | None = None  # scalar: mean support loss at theta
    query_loss_before: Tensor | None = None  # scalar: mean query loss at theta
    query_loss_after: Tensor | None = None  # scalar: mean query loss after inner adaptation
    inner_grad_norms: list[Tensor] = field(default_factory=list)  # per inner step, scalar (task mean)


@dataclass
class AdaptHistory:
    """Every step of an adaptation: index s holds the state after s inner steps (s = 0..steps)."""

    params: list[Params]  # per step; per-task tensors (tasks, *shape)
    support_loss: list[Tensor]  # per step, (tasks,)
    query_loss: list[Tensor] | None  # per step, (tasks,), when query data was given
    grad_norm: list[Tensor]  # per step, (tasks,): norm of the support gradient at that step

    @property
    def steps(self) -> int:
        return len(self.params) - 1


def _as_batch(x: Tensor) -> Tensor:
    return x.unsqueeze(0) if x.dim() == 2 else x


class Algorithm:
    """MAML (Finn, Abbeel, Levine 2017, arXiv:1703.03400) and the switches its family flips."""

    name = "maml"
    first_order = False  # take the inner gradient as a constant
    head_only = False  # adapt only the output layer in the inner loop (ANIL)
    learns_inner_lr = False  # learn a per-parameter inner learning rate (Meta-SGD)
    trainable = True  # False when there is nothing to train (scratch)

    def __init__(self, model: MLP, inner_lr: float = 0.01, inner_steps: int = 1, backend: str = "auto"):
        self.model = model
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.backend = backend

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inner_lr={self.inner_lr}, inner_steps={self.inner_steps})"

    # -- parameters -----------------------------------------------------------------------------
    @property
    def adapt_names(self) -> list[str]:
        return list(self.model.head_names if self.head_only else self.model.names)

    def init(self, generator: torch.Generator, device: torch.device | str | None = None) -> Params:
        """Fresh meta-parameters: the model's, plus any the algorithm learns (e.g. ``lr.*``)."""
        return self.model.init(generator, device)

    def learning_rates(self, params: Params, inner_lr: float | None = None) -> dict[str, float | Tensor]:
        lr = self.inner_lr if inner_lr is None else float(inner_lr)
        return {n: lr for n in self.adapt_names}

    def model_params(self, params: Params) -> Params:
        return {n: params[n] for n in self.model.names}

    # -- meta-gradient --------------------------------------------------------------------------
    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False) -> MetaStep:
        """Outer loss and meta-gradient of one meta-batch (second order unless ``first_order``)."""
        leaves = _leaves(params)
        model_params = self.model_params(leaves)
        rates = self.learning_rates(leaves)
        if self._use_fused(rates):
            loss = F.one_step_relu_query_loss(self.model, model_params, batch.x_support, batch.y_support,
                                              batch.x_query, batch.y_query, self.inner_lr, self.first_order)
            step = MetaStep(loss.detach(), _grad(loss, leaves))
            if metrics:  # numbers only: logging must never change the gradient (and so the run)
                with torch.no_grad():
                    _, inner = F.lowrank_query_loss(
                        self.model, model_params, batch.x_support, batch.y_support, batch.x_query, batch.y_query,
                        self.inner_lr, 1, self.adapt_names, create_graph=False, record=True,
                    )
                self._fill_metrics(step, model_params, batch, inner)
            return step
        if self._use_lowrank(rates, batch):
            loss, inner = F.lowrank_query_loss(
                self.model, model_params, batch.x_support, batch.y_support, batch.x_query, batch.y_query,
                self.inner_lr, self.inner_steps, self.adapt_names, create_graph=not self.first_order, record=metrics,
            )
        else:
            inner = F.inner_adapt(
                self.model, model_params, batch.x_support, batch.y_support, rates, self.inner_steps,
                self.adapt_names, create_graph=not self.first_order, record=metrics, backend=self._dense_backend,
            )
            loss = F.mean_task_loss(self.model, inner.params, batch.x_query, batch.y_query)
        grads = _grad(loss, leaves)
        step = MetaStep(loss.detach(), grads)
        if metrics:
            self._fill_metrics(step, model_params, batch, inner)
        return step

    @property
    def _dense_backend(self) -> str:
        return "auto" if self.backend in ("lowrank", "fused") else self.backend

    def _use_fused(self, rates) -> bool:
        """The hand-written outer backward covers the default protocol: one step, relu, all layers."""
        if self.backend == "fused":
            return True
        return (self.backend == "auto" and self.inner_steps == 1 and self.model.activation == "relu"
                and not self.head_only and not any(isinstance(r, torch.Tensor) for r in rates.values()))

    def _use_lowrank(self, rates, batch: TaskBatch) -> bool:
        """Low-rank adapted weights pay off while steps x shots stays well below the widths."""
        if self.backend not in ("auto", "lowrank", "fused") or not self.model.has_closed_form_gradient:
            if self.backend == "lowrank":
                raise ValueError(f"the lowrank backend does not support the {self.model.activation} activation")
            return False
        if any(isinstance(r, torch.Tensor) for r in rates.values()):
            return False  # per-parameter rates (Meta-SGD) break the low-rank structure
        if self.backend == "lowrank":
            return True
        rank = self.inner_steps * batch.x_support.shape[1]
        return rank <= max(self.model.hidden, default=1) // 2

    def meta_gradient(self, params: Params, batch: TaskBatch) -> tuple[Tensor, Params]:
        """``(loss, grads)``: the outer loss and its gradient, a dict shaped like ``params``."""
        step = self.meta_step(params, batch)
        return step.loss, step.grads

    def _fill_metrics(self, step: MetaStep, model_params: Params, batch: TaskBatch, inner: F.InnerResult | None) -> None:
        step.query_loss_after = step.loss
        with torch.no_grad():
            detached = {n: v.detach() for n, v in model_params.items()}
            step.query_loss_before = F.task_losses(self.model, detached, batch.x_query, batch.y_query).mean()
            if inner is not None and inner.support_losses:
                step.support_loss = inner.support_losses[0].mean()
                step.inner_grad_norms = [g.mean() for g in inner.grad_norms]
            else:
                step.support_loss = F.task_losses(self.model, detached, batch.x_support, batch.y_support).mean()

    # -- adaptation (explorer, evaluation) ------------------------------------------------------
    def adapt(
        self,
        params: Params,
        x_support: Tensor,
        y_support: Tensor,
        steps: int | None = None,
        x_query: Tensor | None = None,
        y_query: Tensor | None = None,
        inner_lr: float | None = None,
        keep_params: bool = True,
    ) -> AdaptHistory:
        """Adapt ``params`` to the support set(s) one SGD step at a time, recording every step.

        Inputs are one task, (points, 1), or many, (tasks, points, 1). Nothing is differentiated
        through; ``inner_lr`` overrides the run's rate (Meta-SGD's learned rates are scaled by
        ``inner_lr / self.inner_lr`` in that case).
        """
        steps = self.inner_steps if steps is None else int(steps)
        x_support, y_support = _as_batch(x_support), _as_batch(y_support)
        has_query = x_query is not None and y_query is not None
        if has_query:
            x_query, y_query = _as_batch(x_query), _as_batch(y_query)
        with torch.no_grad():
            detached = {n: v.detach() for n, v in params.items()}
            rates = self.learning_rates(detached, inner_lr)
            fast = self.model_params(detached)
            tasks = x_support.shape[0]
            history = AdaptHistory([], [], [] if has_query else None, [])
            for s in range(steps + 1):
                loss, grads = F.inner_gradients(self.model, fast, x_support, y_support, self.adapt_names, False, self._dense_backend)
                if keep_params:
                    history.params.append({n: _per_task(v, self.model, n, tasks) for n, v in fast.items()})
                history.support_loss.append(loss)
                history.grad_norm.append(F.gradient_norm(grads))
                if has_query:
                    history.query_loss.append(F.task_losses(self.model, fast, x_query, y_query))
                if s < steps:
                    fast = {**fast, **{n: F.sgd_update(fast[n], grads[n], rates[n]) for n in self.adapt_names}}
            if not keep_params:
                history.params = [{}] * (steps + 1)
        return history


def _per_task(value: Tensor, model: MLP, name: str, tasks: int) -> Tensor:
    if F._is_batched(model, name, value):
        return value
    return value.unsqueeze(0).expand(tasks, *value.shape)


def _leaves(params: Params) -> Params:
    """Parameters that autograd can differentiate w.r.t. (the trainer's leaves pass through)."""
    return {n: v if v.requires_grad else v.detach().requires_grad_() for n, v in params.items()}


def _grad(loss: Tensor, leaves: Params) -> Params:
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, grads)}
