"""Meta-SGD (Li, Zhou, Chen, Li 2017, arXiv:1707.09835).

Learns, next to the initialisation, one inner learning rate per parameter entry:
theta' = theta - lr (*) grad L_support(theta), with ``lr`` meta-learned by the same second-order
meta-gradient. The rates live in the meta-parameters under ``lr.<name>`` and start at
``inner_lr``.
"""

from __future__ import annotations

import torch

from engine.algorithms.base import Algorithm
from engine.model import Params


class MetaSGD(Algorithm):
    name = "metasgd"
    learns_inner_lr = True

    def init(self, generator: torch.Generator, device=None) -> Params:
        params = self.model.init(generator, device)
        for name in self.adapt_names:
            params[f"lr.{name}"] = torch.full_like(params[name], self.inner_lr)
        return params

    def learning_rates(self, params: Params, inner_lr: float | None = None):
        scale = 1.0 if inner_lr is None else float(inner_lr) / self.inner_lr
        return {n: params[f"lr.{n}"] * scale if f"lr.{n}" in params else self.inner_lr * scale for n in self.adapt_names}
