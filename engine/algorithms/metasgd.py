"""Meta-SGD (Li, Zhou, Chen, Li 2017, arXiv:1707.09835).

Learns, next to the initialisation, one inner learning rate per parameter entry:
theta' = theta - lr (*) grad L_support(theta), with ``lr`` meta-learned by the same second-order
meta-gradient. The rates live in the meta-parameters under ``lr.<name>`` and start at
``inner_lr``.
"""

from __future__ import annotations

import torch

from engine.algorithms.base import Algorithm, Section
from engine.model import Params


class MetaSGD(Algorithm):
    name = "metasgd"
    paper = "Li, Zhou, Chen, Li 2017, arXiv:1707.09835"

    def init(self, generator: torch.Generator, device=None, dtype=torch.float32) -> Params:
        params = self.model.init(generator, device, dtype)
        for name in self.adapt_names():
            params[f"lr.{name}"] = torch.full_like(params[name], self.inner_lr)
        return params

    def inner_rates(self, params: Params, step: int):
        return {n: params[f"lr.{n}"] for n in self.adapt_names()}

    def learned_values(self, params: Params, learner=None):
        return {f"lr.{n}": params[f"lr.{n}"].detach().mean() for n in self.adapt_names() if n.endswith("weight")}

    def inspect(self, params, history=None, learner=None):
        rows = []
        for n in self.adapt_names():
            rate = params[f"lr.{n}"].detach().float()
            rows.append((n, (float(rate.mean()), float(rate.min()), float(rate.max()), float((rate < 0).float().mean()))))
        return [Section("learned inner rates (per entry)", ("mean", "min", "max", "share < 0"), tuple(rows))]
