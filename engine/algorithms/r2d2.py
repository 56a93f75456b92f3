"""R2-D2: meta-learning with differentiable closed-form solvers (Bertinetto, Henriques, Torr, Vedaldi
2019, arXiv:1805.08136).

No inner loop: the head is the ridge-regression solution on the support set's features, solved in
one matrix operation per task, and the body is meta-learned through the solve (its gradient is
exact: autograd differentiates ``torch.linalg.solve``). With K support points of F features
(plus a constant), the Woodbury form solves a K x K system instead of an F x F one:

    W = Phi^T (Phi Phi^T + lambda I_K)^-1 Y,    prediction = scale * (Phi_query W) + offset

with the regulariser lambda (``r2d2.log_lambda``, kept positive through its log) and the output
scale and offset (``r2d2.scale``, ``r2d2.offset``) learned with the body, as in the paper.
Regression targets are used as they are; classification (one-hot targets) is the same solve.

In the explorer and in evaluation, step 0 is the head before seeing the support set (zero weights:
it predicts the offset) and every later step is the solved head; more steps change nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from engine.algorithms.base import Algorithm, MetaStep, Section, _grad, _leaves
from engine.functional import AdaptHistory, InnerLoop, func_gradients, gradient_norm, task_losses
from engine.model import Params
from engine.tasks import TaskBatch

LOG_LAMBDA, SCALE, OFFSET = "r2d2.log_lambda", "r2d2.scale", "r2d2.offset"


@dataclass(frozen=True)
class R2D2Options:
    init_lambda: float = 1.0  # the ridge regulariser's starting value

    def check(self) -> None:
        if not self.init_lambda > 0:
            raise ValueError(f"option init_lambda of r2d2 must be positive, got {self.init_lambda}")


class R2D2(Algorithm):
    name = "r2d2"
    paper = "Bertinetto, Henriques, Torr, Vedaldi 2019, arXiv:1805.08136"
    Options = R2D2Options

    def init(self, generator: torch.Generator, device=None, dtype=torch.float32) -> Params:
        params = {n: v for n, v in self.model.init(generator, device, dtype).items() if n not in self.model.head_names}
        like = next(iter(params.values()))
        make = lambda value: torch.tensor(value, dtype=like.dtype, device=like.device)  # noqa: E731
        params.update({LOG_LAMBDA: make(math.log(self.options.init_lambda)), SCALE: make(1.0), OFFSET: make(0.0)})
        return params

    def body(self, params: Params) -> Params:
        return {n: params[n] for n in self.model.names if n not in self.model.head_names}

    def solve(self, params: Params, x_support: Tensor, y_support: Tensor) -> Params:
        """The ridge head of every task, as per-task head parameters (weight (tasks, F, out), bias (tasks, out))."""
        features = self.model.features(params, x_support)  # (tasks, K, F)
        ones = torch.ones(*features.shape[:-1], 1, dtype=features.dtype, device=features.device)
        phi = torch.cat([features, ones], dim=-1)  # (tasks, K, F + 1)
        eye = torch.eye(phi.shape[1], dtype=phi.dtype, device=phi.device)
        gram = torch.bmm(phi, phi.transpose(1, 2)) + torch.exp(params[LOG_LAMBDA]) * eye  # (tasks, K, K)
        targets = y_support
        if not targets.is_floating_point():  # class indices (tasks, K): the solve regresses one-hot codes
            targets = torch.nn.functional.one_hot(targets.long(), self.model.out_features)
        weights = torch.bmm(phi.transpose(1, 2), torch.linalg.solve(gram, targets.to(phi.dtype)))  # (tasks, F + 1, out)
        head_weight, head_bias = self.model.head_names
        return {head_weight: params[SCALE] * weights[:, :-1], head_bias: params[SCALE] * weights[:, -1] + params[OFFSET]}

    def prior_head(self, params: Params, tasks: int) -> Params:
        """The head before the solve: zero weights, the offset as bias."""
        shapes = self.model.shapes()
        head_weight, head_bias = self.model.head_names
        like = params[OFFSET]
        return {head_weight: torch.zeros(tasks, *shapes[head_weight], dtype=like.dtype, device=like.device),
                head_bias: like.detach().expand(tasks, *shapes[head_bias]).clone()}

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        leaves = _leaves(params)
        adapted = {**self.body(leaves), **self.solve(leaves, batch.x_support, batch.y_support)}
        loss = task_losses(self.model, self.loss, adapted, batch.x_query, batch.y_query).mean()
        step = MetaStep(loss.detach(), _grad(loss, leaves), backend=self.backend_choice(batch.x_support.shape[1]))
        if metrics:
            with torch.no_grad():
                prior = {**self.body(leaves), **self.prior_head(leaves, batch.num_tasks)}
                step.query_loss_after = loss.detach()
                step.query_loss_before = task_losses(self.model, self.loss, prior, batch.x_query, batch.y_query).mean()
                step.support_loss = task_losses(self.model, self.loss, prior, batch.x_support, batch.y_support).mean()
        return step

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        return "ridge solve (torch.linalg.solve)"

    def adapt(self, params: Params, x_support: Tensor, y_support: Tensor, steps: int | None = None,
              x_query: Tensor | None = None, y_query: Tensor | None = None, inner_lr: float | None = None,
              keep_params: bool = True) -> AdaptHistory:
        steps = self.inner_steps if steps is None else int(steps)
        x_support, y_support = self._as_input_batch(x_support), self._as_target_batch(y_support)
        has_query = x_query is not None and y_query is not None
        if has_query:
            x_query, y_query = self._as_input_batch(x_query), self._as_target_batch(y_query)
        tasks = x_support.shape[0]
        history = AdaptHistory([], [], [] if has_query else None, [])
        head_loop = InnerLoop(names=tuple(self.model.head_names), rates=())
        with torch.no_grad():
            detached = {n: v.detach() for n, v in params.items()}
            body = {n: self.model.per_task(n, v, tasks) for n, v in self.body(detached).items()}
            states = [{**body, **self.prior_head(detached, tasks)}]
            if steps > 0:
                states.append({**body, **self.solve(detached, x_support, y_support)})
            for s in range(steps + 1):
                state = states[min(s, 1)]
                if s <= 1 or keep_params or s == steps:  # later steps repeat the solved head
                    support, grads = func_gradients(self.model, self.loss, state, x_support, y_support, head_loop, s, False)
                    norm = gradient_norm(grads)
                    if has_query:
                        prediction = self.model.forward(state, x_query)
                        query, query_metrics = self.loss.per_task(prediction, y_query), self.loss.metrics(prediction, y_query)
                history.params.append(state if keep_params else {})
                history.support_loss.append(support)
                history.grad_norm.append(norm)
                if has_query:
                    history.query_loss.append(query)
                    history.query_metrics.append(query_metrics)
            history.final_params = states[-1]
        return history

    def learned_values(self, params: Params, learner=None):
        return {"lambda": torch.exp(params[LOG_LAMBDA].detach()), "scale": params[SCALE].detach(), "offset": params[OFFSET].detach()}

    def inspect(self, params, history=None, learner=None):
        values = self.learned_values(params)
        return [Section("learned ridge head", ("value",), tuple((k, (float(v),)) for k, v in values.items()))]
