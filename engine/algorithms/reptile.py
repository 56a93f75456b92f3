"""Reptile (Nichol, Achiam, Schulman 2018, arXiv:1803.02999).

Run ``inner_steps`` plain SGD steps on each task's support set to get phi_i, then move theta
towards the tasks' mean: the outer "gradient" is (theta - mean_i phi_i) / inner_lr, handed to
the outer optimizer like any gradient. Dividing by ``inner_lr`` makes the one-step case exactly
the mean support gradient (Reptile with one inner step is joint training, as the paper notes),
and keeps its scale comparable to the other algorithms' meta-gradients.
"""

from __future__ import annotations

import torch

from engine import functional as F
from engine.algorithms.base import Algorithm, MetaStep
from engine.model import Params
from engine.tasks import TaskBatch


class Reptile(Algorithm):
    name = "reptile"
    first_order = True

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False) -> MetaStep:
        with torch.no_grad():
            theta = {n: v.detach() for n, v in params.items()}
            inner = F.inner_adapt(
                self.model, theta, batch.x_support, batch.y_support, self.learning_rates(theta),
                self.inner_steps, self.adapt_names, create_graph=False, record=metrics, backend=self._dense_backend,
            )
            grads = {}
            for name, value in theta.items():
                adapted = inner.params[name]
                mean = adapted.mean(0) if F._is_batched(self.model, name, adapted) else adapted
                grads[name] = (value - mean) / self.inner_lr
            loss = F.task_losses(self.model, inner.params, batch.x_query, batch.y_query).mean()
        step = MetaStep(loss, grads)
        if metrics:
            self._fill_metrics(step, theta, batch, inner)
        return step
