"""Reptile (Nichol, Achiam, Schulman 2018, arXiv:1803.02999).

Run ``inner_steps`` plain SGD steps on each task's support set to get phi_i, then move theta
towards the tasks' mean: the outer "gradient" is (theta - mean_i phi_i) / inner_lr, handed to
the outer optimizer like any gradient. Dividing by ``inner_lr`` makes the one-step case exactly
the mean support gradient (Reptile with one inner step is joint training, as the paper notes),
and keeps its scale comparable to the other algorithms' meta-gradients.

theta - phi_i is not formed by subtraction: in float32 that cancels (2.4% of the coordinates of
a trained run came out exactly zero). It is the sum of the applied updates, accumulated as they
are made, which is exact up to the rounding of each update.

Reptile needs several inner steps to differ from joint training; its defaults are the 5 steps at
0.01 that meta-learn on the sinusoid protocol (the paper's sine experiments take even more).
"""

from __future__ import annotations

import torch

from engine import backends
from engine.algorithms.base import Algorithm, MetaStep
from engine.functional import dense_adapt, task_losses
from engine.model import Params
from engine.tasks import TaskBatch


class Reptile(Algorithm):
    name = "reptile"
    paper = "Nichol, Achiam, Schulman 2018, arXiv:1803.02999"
    first_order = True
    defaults = {"inner_lr": 0.01, "inner_steps": 5}

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        with torch.no_grad():
            theta = {n: v.detach() for n, v in params.items()}
            loop = self.inner_loop(theta, progress)
            backend = backends.choose_dense(self.backend, self.model, self.loss, loop)
            history = dense_adapt(backend.gradients, self.model, self.loss, self.inner_start(theta, batch.num_tasks),
                                  batch.x_support, batch.y_support, loop, keep_params=False, final_gradient=False,
                                  displacement=True)
            grads = {n: torch.zeros_like(v) for n, v in theta.items()}
            for name, moved in history.displacement.items():
                if name in grads:
                    grads[name] = moved.mean(0) / self.inner_lr
            loss = task_losses(self.model, self.loss, history.final_params, batch.x_query, batch.y_query, loop.steps).mean()
        step = MetaStep(loss, grads, backend=f"{backend.name} (no differentiation)")
        if metrics:
            self.fill_plain_metrics(step, self.inner_start(theta, batch.num_tasks), batch, history.support_loss, history.grad_norm)
        return step

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        loop = self.inner_loop(self._shaped_params(), progress)
        return f"{backends.choose_dense(self.backend, self.model, self.loss, loop).name} (no differentiation)"
