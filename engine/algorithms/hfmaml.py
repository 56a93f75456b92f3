"""Hessian-free MAML (Fallah, Mokhtari, Ozdaglar 2020, arXiv:1908.10400; the theory document's
"HF-MAML"): MAML's meta-gradient with every Hessian-vector product replaced by a central finite
difference of two support gradients.

MAML's meta-gradient of S inner steps ``theta_{s+1} = theta_s - alpha grad L_s(theta_s)`` is

    g = (I - alpha H(theta_0)) (I - alpha H(theta_1)) ... (I - alpha H(theta_{S-1})) grad L_q(theta_S),

formed from the right: ``v <- v - alpha H(theta_s) v`` for s = S-1, ..., 0, starting at
``v = grad L_q(theta_S)`` (one step: the lecture notes' ``(I - alpha H) grad L_q(theta')``). Here
``H(theta_s) v`` is ``||v|| (grad L_s(theta_s + r u) - grad L_s(theta_s - r u)) / 2r`` with
``u = v / ||v||``: ``r`` is a distance in parameter space (option ``r``, default 1e-3). Its error is
``O(r^2)`` until round-off takes over at about ``eps / r``. Nothing is differentiated through, so
no graph is kept; the backward sweep does need every ``theta_s``, one per task and inner step, so
its memory grows by one copy of the parameters per task per step (``maml-tui bench --cost``: 172
KiB a step on the default protocol, against MAML's 278).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import backends
from engine.algorithms.base import Algorithm, MetaStep
from engine.functional import InnerLoop, gradient_norm, sgd_update
from engine.hessian import fd_hvp, norm
from engine.model import Params
from engine.tasks import TaskBatch


@dataclass(frozen=True)
class HFMAMLOptions:
    r: float = 1e-3  # the finite difference's step, a distance in parameter space

    def check(self) -> None:
        if not 0 < self.r <= 1.0:
            raise ValueError(f"option r of hfmaml (the finite-difference step) must be in (0, 1], got {self.r}")


class HFMAML(Algorithm):
    name = "hfmaml"
    paper = "Fallah, Mokhtari, Ozdaglar 2020, arXiv:1908.10400"
    Options = HFMAMLOptions
    first_order = True  # the inner loop keeps no graph: the second-order term comes from differences

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        tasks, r = batch.num_tasks, self.options.r
        with torch.no_grad():
            theta = {n: v.detach() for n, v in params.items()}
            loop = self.inner_loop(theta, progress)
            backend = backends.choose_dense(self.backend, self.model, self.loss, loop)
            gradients = backend.gradients
            fast = self.inner_start(theta, tasks)
            points, support_losses, grad_norms = [], [], []
            for s in range(loop.steps):
                points.append(fast)
                support, grads = gradients(self.model, self.loss, fast, batch.x_support, batch.y_support, loop, s, False)
                support_losses.append(support)
                grad_norms.append(gradient_norm(grads))
                fast = {**fast, **{n: sgd_update(fast[n], grads[n], loop.rates[s][n]) for n in loop.names}}
            query_loop = InnerLoop(names=loop.names, rates=(), second_order=False)
            query, vector = gradients(self.model, self.loss, fast, batch.x_query, batch.y_query, query_loop, loop.steps, False)
            for s in reversed(range(loop.steps)):  # v <- (I - alpha H(theta_s)) v
                length = norm(vector)
                safe = torch.where(length > 0, length, torch.ones_like(length))
                unit = {n: v / safe.view(-1, *([1] * (v.dim() - 1))) for n, v in vector.items()}

                def support_gradients(at: Params, s=s) -> dict:
                    return gradients(self.model, self.loss, at, batch.x_support, batch.y_support, loop, s, False)[1]

                product = fd_hvp(support_gradients, points[s], unit, r, tasks, self.model)
                vector = {n: v - loop.rates[s][n] * safe.view(-1, *([1] * (v.dim() - 1))) * product[n]
                          for n, v in vector.items()}
            grads = {n: torch.zeros_like(v) for n, v in theta.items()}
            for n, v in vector.items():
                grads[n] = v.mean(0)  # the outer loss is the tasks' mean query loss
            loss = query.mean()
        step = MetaStep(loss, grads, backend=f"{backend.name} (finite differences, r = {r:g})")
        if metrics:
            self.fill_plain_metrics(step, self.inner_start(theta, tasks), batch, support_losses, grad_norms)
        return step

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        loop = self.inner_loop(self._shaped_params(), progress)
        return f"{backends.choose_dense(self.backend, self.model, self.loss, loop).name} (finite differences)"
