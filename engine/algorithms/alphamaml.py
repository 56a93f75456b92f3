"""Alpha-MAML: adaptive MAML (Behl, Baydin, Torr 2019, arXiv:1905.07435).

MAML whose inner rate alpha and outer rate beta adapt online by hypergradient descent (Baydin et
al. 2018, arXiv:1703.04782):

* alpha is a meta-parameter (``alpha``, one number shared by every parameter): its exact gradient
  dL_query(theta')/d alpha comes with the meta-gradient, and it moves by plain gradient descent
  at ``inner_hyper_lr`` (not by Adam: the hypergradient rule is the algorithm).
* beta, the outer Adam's rate, moves by the Adam-HD rule: beta_t = beta_{t-1} + outer_hyper_lr *
  g_t . u_{t-1}, where g_t is this meta-gradient and u_{t-1} the direction Adam moved theta by at
  the previous step (what dL(theta_t)/d beta is, with its sign flipped). It grows while successive
  steps agree and shrinks when they turn back.

Both stay above ``min_rate``. Their values are logged with every metric record (``alpha``,
``beta``) and drawn by the explorer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.algorithms.base import Algorithm, Section
from engine.model import Params

ALPHA = "alpha"


@dataclass(frozen=True)
class AlphaMAMLOptions:
    inner_hyper_lr: float = 1e-5  # step of alpha's hypergradient descent
    outer_hyper_lr: float = 1e-7  # step of beta's hypergradient descent (Adam-HD's 1e-7)
    min_rate: float = 1e-6  # neither rate goes below this

    def check(self) -> None:
        for key in ("inner_hyper_lr", "outer_hyper_lr", "min_rate"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"option {key} of alphamaml must not be negative, got {getattr(self, key)}")


class AlphaMAML(Algorithm):
    name = "alphamaml"
    paper = "Behl, Baydin, Torr 2019, arXiv:1905.07435"
    Options = AlphaMAMLOptions
    BETA, DIRECTION = "alphamaml.beta", "alphamaml.direction."

    def init(self, generator: torch.Generator, device=None, dtype=torch.float32) -> Params:
        params = self.model.init(generator, device, dtype)
        like = next(iter(params.values()))
        params[ALPHA] = torch.tensor(self.inner_lr, dtype=like.dtype, device=like.device)
        return params

    def inner_rates(self, params: Params, step: int):
        return {n: params[ALPHA] for n in self.adapt_names()}

    def outer_update(self, learner, grads: Params, progress: float) -> None:
        options, buffers = self.options, learner.buffers
        with torch.no_grad():
            alpha = learner.params[ALPHA]
            alpha.sub_(options.inner_hyper_lr * grads[ALPHA]).clamp_(min=options.min_rate)
            names = [n for n in grads if n != ALPHA]
            beta = float(buffers[self.BETA]) if self.BETA in buffers else learner.config.train.outer_lr
            if all(self.DIRECTION + n in buffers for n in names):
                # g_t . u_{t-1}: the per-tensor sums added in float64 in order, then one host sync
                agreement = torch.zeros((), dtype=torch.float64, device=alpha.device)
                for n in names:
                    agreement = agreement + (grads[n] * buffers[self.DIRECTION + n]).sum().double()
                beta = max(beta + options.outer_hyper_lr * float(agreement), options.min_rate)
            before = {n: learner.params[n].detach().clone() for n in names}
        learner.adam_step({n: grads[n] for n in names}, beta)
        with torch.no_grad():
            for n in names:  # u_t: the direction Adam moved along, per unit of rate
                buffers[self.DIRECTION + n] = (before[n] - learner.params[n].detach()) / beta
            buffers[self.BETA] = torch.tensor(beta, dtype=torch.float64)  # a CPU scalar: no device sync to read

    def learned_values(self, params: Params, learner=None):
        values = {ALPHA: params[ALPHA].detach()}
        if learner is not None:
            values["beta"] = float(learner.buffers.get(self.BETA, learner.config.train.outer_lr))
        return values

    def inspect(self, params, history=None, learner=None):
        values = self.learned_values(params, learner)
        rows = [("alpha (inner rate)", (float(values[ALPHA]),))]
        if "beta" in values:
            rows.append(("beta (outer rate)", (float(values["beta"]),)))
        return [Section("rates adapted by hypergradient descent", ("now",), tuple(rows))]
