"""The shared shape of every algorithm: small hooks over one functional core.

An algorithm never differentiates by itself. It answers a few questions, and the core
(``engine.functional``, with the fast paths chosen in ``engine.backends``) does the rest:

========================== ========================================================================
hook                       question (the MAML answer)
========================== ========================================================================
``build_model``            which model the inner loop runs (the given one; CAVIA adds a context)
``init``                   the meta-parameters (the model's; Meta-SGD adds rates, MAML++ per-step rates)
``adapt_names``            which parameters adapt in the inner loop (all; ANIL: the head)
``inner_start``            where the inner loop starts per task (theta; CAVIA: theta and a zero context)
``inner_rates``            the rate of each adapted parameter at inner step s (``inner_lr``)
``inner_regulariser``      an extra inner-loss term (none)
``step_weights``           the outer loss as weights on the query loss after each step (last only)
``second_order``           differentiate through the inner gradients at this point of training (yes)
``outer_lr`` / ``outer_update`` the outer optimizer's rate and step (Adam at the config's rate)
``outer_lr_scales``        meta-parameters that move at a fraction of that rate (none)
``learned_values``         named numbers to log (none; Meta-SGD its rates, Alpha-MAML alpha and beta)
``inspect``                what the explorer shows of the algorithm's own state (nothing)
========================== ========================================================================

Algorithms with no inner loop of this kind (Reptile's outer direction, R2-D2's closed-form head,
the baselines) override :meth:`Algorithm.meta_step` and :meth:`Algorithm.adapt` instead.

Two entry points serve everyone: :meth:`Algorithm.meta_step` (one meta-batch -> the outer loss and
a gradient shaped like the meta-parameters) and :meth:`Algorithm.adapt` (every inner step's
parameters, support loss, query loss and gradient norm, for the explorer and evaluation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from engine.errors import shown
from engine import backends
from engine.functional import AdaptHistory, InnerLoop, InnerResult, Rate, Regulariser, dense_adapt, task_losses
from engine.losses import Loss, MeanSquaredError
from engine.model import Model, Params
from engine.tasks import TaskBatch


@dataclass
class MetaStep:
    """One meta-batch's meta-gradient and the numbers the metrics are made of."""

    loss: Tensor  # scalar: the outer objective
    grads: Params  # shaped like the meta-parameters
    backend: str = ""  # which backend computed it
    support_loss: Tensor | None = None  # scalar: mean support loss at theta
    query_loss_before: Tensor | None = None  # scalar: mean query loss at theta
    query_loss_after: Tensor | None = None  # scalar: mean query loss after the inner loop
    inner_grad_norms: list[Tensor] = field(default_factory=list)  # per inner step, scalar (task mean)
    diagnostics: dict[str, Tensor] = field(default_factory=dict)  # the algorithm's own numbers (iMAML's CG residual)


@dataclass(frozen=True)
class Section:
    """A small table the explorer shows for an algorithm: rows of labelled numbers."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[float, ...]], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": list(self.columns), "rows": [[label, list(values)] for label, values in self.rows]}



class Algorithm:
    """MAML (Finn, Abbeel, Levine 2017, arXiv:1703.03400): the default answer to every hook."""

    name: ClassVar[str] = "maml"
    paper: ClassVar[str] = "Finn, Abbeel, Levine 2017, arXiv:1703.03400"
    # the inner rate and step count a run of this algorithm gets unless told otherwise (the MAML
    # reference code's alpha; the paper's text says 0.01, which sits on the edge of stability)
    defaults: ClassVar[dict[str, Any]] = {"inner_lr": 0.001, "inner_steps": 1}
    first_order: ClassVar[bool] = False
    trainable: ClassVar[bool] = True  # False when there is nothing to meta-train (scratch)
    Options: ClassVar[type | None] = None  # a frozen dataclass of the algorithm's own settings
    fresh_settings: ClassVar[tuple[str, ...]] = ()  # run settings that change the meta-parameters' shapes

    def __init__(self, model: Model, inner_lr: float | None = None, inner_steps: int | None = None,
                 backend: str = "auto", loss: Loss | None = None, options: dict[str, Any] | None = None):
        self.inner_lr = float(self.defaults["inner_lr"] if inner_lr is None else inner_lr)
        self.inner_steps = int(self.defaults["inner_steps"] if inner_steps is None else inner_steps)
        if not self.inner_lr > 0:
            raise ValueError(f"the inner learning rate must be positive, got {self.inner_lr}")
        if self.inner_steps < 0:
            raise ValueError(f"the number of inner steps must not be negative, got {self.inner_steps}")
        self.backend = backends.check_name(backend)
        self.loss = loss or MeanSquaredError()
        self.options = self.parse_options(options)
        self.model = self.build_model(model)

    def __repr__(self) -> str:
        choice = self.backend_choice(shots=10)
        return (f"{type(self).__name__}(inner_lr={self.inner_lr:g}, inner_steps={self.inner_steps}, "
                f"backend={self.backend}->{choice})")

    # -- options --------------------------------------------------------------------------------
    @classmethod
    def parse_options(cls, options: dict[str, Any] | None) -> Any:
        """The algorithm's options from plain data; ``ValueError`` with one sentence if invalid."""
        options = dict(options or {})
        if cls.Options is None:
            if options:
                raise ValueError(f"{cls.name} has no options (got {', '.join(sorted(options))})")
            return None
        fields = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = set(options) - set(fields)
        if unknown:
            raise ValueError(f"{cls.name} has no option {shown(sorted(unknown)[0])}; it has {', '.join(fields)}")
        parsed = {}
        for key, value in options.items():
            kind = type(fields[key].default)
            try:
                parsed[key] = _coerce(value, kind)
            except (TypeError, ValueError):
                what = {int: "an integer", float: "a finite number", bool: "true or false"}.get(kind, kind.__name__)
                raise ValueError(f"option {key} of {cls.name} must be {what}, got {shown(value)}") from None
        instance = cls.Options(**parsed)
        check = getattr(instance, "check", None)
        if check is not None:
            check()
        return instance

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        return {} if cls.Options is None else dataclasses.asdict(cls.Options())

    # -- hooks ----------------------------------------------------------------------------------
    def build_model(self, model: Model) -> Model:
        return model

    def prepare(self, family) -> None:
        """Take what the algorithm needs of the task family before its meta-parameters are made
        (pretrain's global classifier needs the meta-train classes); nothing by default."""

    def init(self, generator: torch.Generator, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32) -> Params:
        """Fresh meta-parameters: the model's, plus any the algorithm learns."""
        return self.model.init(generator, device, dtype)

    def adapt_names(self) -> list[str]:
        return list(self.model.names)

    def model_params(self, params: Params) -> Params:
        """The model's parameters among the meta-parameters (learned rates and the like left out)."""
        return {n: params[n] for n in self.model.names if n in params}

    def inner_start(self, params: Params, tasks: int) -> Params:
        return self.model_params(params)

    def inner_rates(self, params: Params, step: int) -> dict[str, Rate]:
        return {n: self.inner_lr for n in self.adapt_names()}

    def inner_regulariser(self, params: Params) -> Regulariser | None:
        return None

    def step_weights(self, steps: int, progress: float) -> tuple[float, ...] | None:
        return None

    def second_order(self, progress: float) -> bool:
        return not self.first_order

    def outer_lr(self, base: float, progress: float) -> float:
        return base

    def outer_lr_scales(self) -> dict[str, float]:
        """Meta-parameters whose outer rate is a fraction of the others' (name -> fraction; 1 by default)."""
        return {}

    def outer_update(self, learner, grads: Params, progress: float) -> None:
        """Apply the meta-gradient (the learner's Adam at ``outer_lr``)."""
        learner.adam_step(grads, self.outer_lr(learner.config.train.outer_lr, progress))

    def learned_values(self, params: Params, learner=None) -> dict[str, float | Tensor]:
        """Named learned numbers to log (rates, regularisers); tensors are reduced by the caller."""
        return {}

    def inspect(self, params: Params, history: AdaptHistory | None = None, learner=None) -> list[Section]:
        """What the explorer shows of this algorithm's state, as small tables."""
        return []

    # -- the inner loop, as data ----------------------------------------------------------------
    def inner_loop(self, params: Params, progress: float = 0.0, steps: int | None = None,
                   lr_scale: float = 1.0) -> InnerLoop:
        steps = self.inner_steps if steps is None else int(steps)
        rates = []
        for s in range(steps):
            step_rates = self.inner_rates(params, s)
            if lr_scale != 1.0:
                step_rates = {n: r * lr_scale for n, r in step_rates.items()}
            rates.append(step_rates)
        regulariser = self.inner_regulariser(params)
        return InnerLoop(
            names=tuple(self.adapt_names()), rates=tuple(rates), second_order=self.second_order(progress),
            step_weights=self.step_weights(steps, progress) if steps else None,
            regulariser=regulariser, anchor=self.model_params(params) if regulariser is not None else None,
        )

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        """Which backend a meta-step on ``shots`` support points runs on."""
        params = self._shaped_params()
        try:
            return backends.choose(self.backend, self.model, self.loss, self.inner_loop(params, progress), shots).name
        except ValueError as error:
            return f"refused ({error})"

    def explain_backends(self, shots: int, progress: float = 0.0) -> dict[str, str]:
        if type(self).meta_step is not Algorithm.meta_step:
            return {self.backend_choice(shots, progress): "runs (this algorithm forms its own meta-step)"}
        return backends.explain(self.backend, self.model, self.loss, self.inner_loop(self._shaped_params(), progress), shots)

    def _shaped_params(self) -> Params:
        return self.init(torch.Generator().manual_seed(0), "cpu")

    # -- meta-gradient --------------------------------------------------------------------------
    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        """Outer loss and meta-gradient of one meta-batch."""
        leaves = _leaves(params)
        loop = self.inner_loop(leaves, progress)
        start = self.inner_start(leaves, batch.num_tasks)
        backend = backends.choose(self.backend, self.model, self.loss, loop, batch.x_support.shape[1])
        objective, final, inner = backend.meta_loss(self.model, self.loss, start, batch, loop, record=metrics)
        step = MetaStep(objective.detach(), _grad(objective, leaves), backend.name)
        if metrics:
            self.fill_metrics(step, start, batch, inner, final.detach())
        return step

    def meta_gradient(self, params: Params, batch: TaskBatch, progress: float = 0.0) -> tuple[Tensor, Params]:
        """``(loss, grads)``: the outer loss and its gradient, a dict shaped like ``params``."""
        step = self.meta_step(params, batch, progress=progress)
        return step.loss, step.grads

    def fill_metrics(self, step: MetaStep, start: Params, batch: TaskBatch, inner: InnerResult | None,
                     final: Tensor) -> None:
        step.query_loss_after = final
        with torch.no_grad():
            detached = {n: v.detach() for n, v in start.items()}
            step.query_loss_before = task_losses(self.model, self.loss, detached, batch.x_query, batch.y_query, 0).mean()
            if inner is not None and inner.support_losses:
                step.support_loss = inner.support_losses[0].mean()
                step.inner_grad_norms = [g.mean() for g in inner.grad_norms]
            else:
                step.support_loss = task_losses(self.model, self.loss, detached, batch.x_support, batch.y_support, 0).mean()

    def fill_plain_metrics(self, step: MetaStep, start: Params, batch: TaskBatch, support_losses, grad_norms) -> None:
        """The metrics of a meta-step that differentiates nothing through its inner loop (Reptile,
        iMAML, HF-MAML): the query loss after it is the step's loss; before it, at ``start``; the
        support loss and gradient norms are those the inner loop recorded (per step, per task)."""
        step.query_loss_after = step.loss
        with torch.no_grad():
            step.query_loss_before = task_losses(self.model, self.loss, start, batch.x_query, batch.y_query, 0).mean()
            step.support_loss = (support_losses[0] if support_losses else
                                 task_losses(self.model, self.loss, start, batch.x_support, batch.y_support, 0)).mean()
        step.inner_grad_norms = [g.mean() for g in grad_norms]

    # -- adaptation (explorer, evaluation) ------------------------------------------------------
    def adapt(self, params: Params, x_support: Tensor, y_support: Tensor, steps: int | None = None,
              x_query: Tensor | None = None, y_query: Tensor | None = None, inner_lr: float | None = None,
              keep_params: bool = True) -> AdaptHistory:
        """Adapt ``params`` to the support set(s) one step at a time, recording every step.

        Inputs are one task, (points, in), or many, (tasks, points, in). Nothing is differentiated
        through. ``inner_lr`` overrides the run's rate; learned rates are scaled by
        ``inner_lr / self.inner_lr``.
        """
        x_support, y_support = self._as_input_batch(x_support), self._as_target_batch(y_support)
        if x_query is not None and y_query is not None:
            x_query, y_query = self._as_input_batch(x_query), self._as_target_batch(y_query)
        with torch.no_grad():
            detached = {n: v.detach() for n, v in params.items()}
            scale = 1.0 if inner_lr is None else float(inner_lr) / self.inner_lr
            loop = self.inner_loop(detached, progress=1.0, steps=steps, lr_scale=scale)
            start = self.inner_start(detached, x_support.shape[0])
            backend = backends.choose_dense(self.backend, self.model, self.loss, loop)
            return dense_adapt(backend.gradients, self.model, self.loss, start, x_support, y_support, loop,
                               x_query, y_query, keep_params)

    def _as_target_batch(self, y: Tensor) -> Tensor:
        """Targets of one task get a tasks dimension (regression targets are (points, out), class
        labels (points,))."""
        return y.unsqueeze(0) if y.dim() == self.loss.target_dims else y

    def _as_input_batch(self, x: Tensor) -> Tensor:
        """Inputs of one task get a tasks dimension: (points, in), or (points, C, H, W) for images."""
        shape = getattr(self.model, "input_shape", None)
        one_task = 1 + (len(shape) if shape is not None else 1)
        return x.unsqueeze(0) if x.dim() == one_task else x


def _coerce(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(value, (bool, int)):
            return bool(value)
        raise TypeError(value)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(value)
        return int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        result = float(value)
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError(value)
        return result
    return kind(value)


def _leaves(params: Params) -> Params:
    """Parameters that autograd can differentiate w.r.t. (the trainer's leaves pass through)."""
    return {n: v if v.requires_grad else v.detach().requires_grad_() for n, v in params.items()}


def _grad(loss: Tensor, leaves: Params) -> Params:
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
    return {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, grads)}
