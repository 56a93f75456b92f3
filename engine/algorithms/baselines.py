"""The two baselines every meta-learning paper compares to (Finn et al. 2017, section 5.1).

* ``pretrain``: one network trained with the outer optimizer on the loss of all tasks' points
  (support and query) with no adaptation during training; fine-tuned at test time.
* ``scratch``: the random initialisation, fine-tuned at test time; there is nothing to train.

Both fine-tune with plain SGD on every parameter through the same ``adapt`` as the meta-learners,
at the step the paper tuned for its baseline (0.01 at K = 5; give another with ``--inner-lr``).
Their metrics report the query loss after ``inner_steps`` of fine-tuning so charts compare like
with like.
"""

from __future__ import annotations

import torch

from engine.algorithms.base import Algorithm, MetaStep, _grad, _leaves
from engine.functional import task_losses
from engine.model import Params
from engine.tasks import TaskBatch


class _Baseline(Algorithm):
    paper = "Finn, Abbeel, Levine 2017, arXiv:1703.03400, section 5.1"
    defaults = {"inner_lr": 0.01, "inner_steps": 1}  # the paper's tuned fine-tuning step for K = 5

    def fill_metrics(self, step: MetaStep, start: Params, batch: TaskBatch, inner=None, final=None) -> None:
        history = self.adapt(start, batch.x_support, batch.y_support, self.inner_steps,
                             batch.x_query, batch.y_query, keep_params=False)
        step.support_loss = history.support_loss[0].mean()
        step.query_loss_before = history.query_loss[0].mean()
        step.query_loss_after = history.query_loss[-1].mean()
        step.inner_grad_norms = [g.mean() for g in history.grad_norm[:-1]]

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        return "plain autograd (no inner loop in training)"


class Pretrain(_Baseline):
    name = "pretrain"

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        leaves = _leaves(params)
        x = torch.cat([batch.x_support, batch.x_query], dim=1)  # (tasks, shots + query, in)
        y = torch.cat([batch.y_support, batch.y_query], dim=1)
        loss = task_losses(self.model, self.loss, leaves, x, y).mean()
        step = MetaStep(loss.detach(), _grad(loss, leaves), backend="autograd")
        if metrics:
            self.fill_metrics(step, leaves, batch)
        return step


class Scratch(_Baseline):
    name = "scratch"
    trainable = False  # the trainer saves the initialisation and takes no outer steps

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        history = self.adapt(params, batch.x_support, batch.y_support, self.inner_steps,
                             batch.x_query, batch.y_query, keep_params=False)
        step = MetaStep(history.query_loss[-1].mean(), {n: torch.zeros_like(v) for n, v in params.items()}, backend="none")
        if metrics:
            self.fill_metrics(step, params, batch)
        return step

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        return "none (nothing to train)"
