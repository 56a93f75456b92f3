"""The two baselines every meta-learning paper compares to (Finn et al. 2017, section 5.1).

* ``pretrain``: one network trained with the outer optimizer on the loss of all tasks' points
  (support and query) with no adaptation during training; fine-tuned at test time.
* ``scratch``: the random initialisation, fine-tuned at test time; there is nothing to train.

Both fine-tune with plain SGD on every parameter at the run's inner learning rate, through the
same ``adapt`` as the meta-learners. Their metrics report the query loss after ``inner_steps`` of
fine-tuning so charts compare like with like.
"""

from __future__ import annotations

import torch

from engine import functional as F
from engine.algorithms.base import Algorithm, MetaStep, _grad, _leaves
from engine.model import Params
from engine.tasks import TaskBatch


class _Baseline(Algorithm):
    def _fill_metrics(self, step: MetaStep, model_params: Params, batch: TaskBatch, inner=None) -> None:
        history = self.adapt(model_params, batch.x_support, batch.y_support, self.inner_steps,
                             batch.x_query, batch.y_query, keep_params=False)
        step.support_loss = history.support_loss[0].mean()
        step.query_loss_before = history.query_loss[0].mean()
        step.query_loss_after = history.query_loss[-1].mean()
        step.inner_grad_norms = [g.mean() for g in history.grad_norm[:-1]]


class Pretrain(_Baseline):
    name = "pretrain"

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False) -> MetaStep:
        leaves = _leaves(params)
        x = torch.cat([batch.x_support, batch.x_query], dim=1)  # (tasks, shots + query, 1)
        y = torch.cat([batch.y_support, batch.y_query], dim=1)
        loss = F.task_losses(self.model, leaves, x, y).mean()
        step = MetaStep(loss.detach(), _grad(loss, leaves))
        if metrics:
            self._fill_metrics(step, leaves, batch)
        return step


class Scratch(_Baseline):
    name = "scratch"
    trainable = False  # the trainer saves the initialisation and takes no outer steps

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False) -> MetaStep:
        history = self.adapt(params, batch.x_support, batch.y_support, self.inner_steps,
                             batch.x_query, batch.y_query, keep_params=False)
        step = MetaStep(history.query_loss[-1].mean(), {n: torch.zeros_like(v) for n, v in params.items()})
        if metrics:
            self._fill_metrics(step, params, batch)
        return step
