"""MAML++: How to train your MAML (Antoniou, Edwards, Storkey 2019, arXiv:1810.09502).

MAML with the paper's fixes for its instability and cost, each a hook of ``base.Algorithm``:

* **LSLR**, learned per-layer per-step inner rates: every parameter tensor has its own rate at
  every inner step (``lslr.<name>``, shape ``(steps,)``, starting at ``inner_lr``), meta-learned
  with the rest. Adaptation past the trained step count reuses the last step's rate. The rates
  move at ``rates_outer_lr_scale`` (0.01) of the outer rate: Adam moves every parameter by about
  its rate per step whatever its scale, and the paper's rates start at 0.1 under an outer rate of
  0.001 (1% a step); rates that start at 0.001 keep that relative speed only at a hundredth of it.
  At the full rate they leave the stable range within a thousand steps on the sinusoid protocol.
* **MSL**, the multi-step loss: the outer loss is a weighted sum of the query losses after every
  inner step. The weights start uniform and are annealed towards the last step over the first
  ``msl_fraction`` of training (non-final weights never below 0.03 / steps, as in the reference
  code); after that only the last step counts. The reference code anneals over its first 10 of
  100 epochs (``msl_fraction=0.1``); here the default anneals over the whole run, because on the
  sinusoid protocol the short schedule leaves the early steps untrained (query MSE 0.89 after one
  step at 10,000 outer steps, against 0.56 for MAML) while the long one keeps every step good.
* **DA**, derivative-order annealing: first order for the first ``first_order_fraction`` of
  training, exact second order after (the paper: first order for 50 of 150 epochs).
* **CA**, a cosine-annealed outer rate, from the configured rate down to ``min_outer_lr``.
* **BNRS / BNWB**, per-step batch-norm statistics and weights: the core passes every forward the
  inner step it is at; a model with batch norm offers ``with_per_step_norm(steps)``, which this
  algorithm asks for. The MLP has no batch norm, so there it changes nothing.

The defaults are the paper's five inner steps; the inner rate starts at the engine's 0.001.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.algorithms.base import Algorithm, Section
from engine.model import Model, Params


@dataclass(frozen=True)
class MAMLPlusPlusOptions:
    learn_rates: bool = True  # LSLR: learn a rate per parameter tensor and inner step
    rates_outer_lr_scale: float = 0.01  # the rates' outer rate as a fraction of the weights' (see the module docstring)
    msl_fraction: float = 1.0  # share of training over which the multi-step loss anneals to the last step (0: off)
    first_order_fraction: float = 0.33  # share of training done first order before switching to second (0: never)
    cosine_outer_lr: bool = True  # cosine-anneal the outer rate to min_outer_lr over the run
    min_outer_lr: float = 1e-5  # where the cosine ends

    def check(self) -> None:
        for key in ("msl_fraction", "first_order_fraction"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ValueError(f"option {key} of mamlpp must be between 0 and 1, got {getattr(self, key)}")
        if not self.rates_outer_lr_scale > 0:
            raise ValueError(f"option rates_outer_lr_scale of mamlpp must be positive, got {self.rates_outer_lr_scale}")
        if not self.min_outer_lr >= 0:
            raise ValueError(f"option min_outer_lr of mamlpp must not be negative, got {self.min_outer_lr}")


class MAMLPlusPlus(Algorithm):
    name = "mamlpp"
    paper = "Antoniou, Edwards, Storkey 2019, arXiv:1810.09502"
    defaults = {"inner_lr": 0.001, "inner_steps": 5}
    Options = MAMLPlusPlusOptions
    fresh_settings = ("inner_steps",)  # one learned rate per step

    def build_model(self, model: Model) -> Model:
        per_step = getattr(model, "with_per_step_norm", None)
        return per_step(max(self.inner_steps, 1)) if per_step is not None else model

    def init(self, generator: torch.Generator, device=None, dtype=torch.float32) -> Params:
        params = self.model.init(generator, device, dtype)
        if self.options.learn_rates:
            like = next(iter(params.values()))
            for name in self.adapt_names():
                params[f"lslr.{name}"] = torch.full((max(self.inner_steps, 1),), self.inner_lr, dtype=like.dtype, device=like.device)
        return params

    def inner_rates(self, params: Params, step: int):
        if not self.options.learn_rates:
            return super().inner_rates(params, step)
        return {n: params[f"lslr.{n}"][min(step, params[f"lslr.{n}"].shape[0] - 1)] for n in self.adapt_names()}

    def outer_lr_scales(self) -> dict[str, float]:
        return {f"lslr.{n}": self.options.rates_outer_lr_scale for n in self.adapt_names()} if self.options.learn_rates else {}

    def step_weights(self, steps: int, progress: float) -> tuple[float, ...] | None:
        fraction = self.options.msl_fraction
        if steps < 2 or fraction <= 0 or progress >= fraction:
            return None  # the last step only
        decay = progress / fraction  # 0 at the start, 1 when the annealing ends
        floor = 0.03 / steps
        early = max(1.0 / steps - decay / steps, floor)
        last = min(1.0 / steps + decay * (steps - 1) / steps, 1.0 - (steps - 1) * floor)
        return (early,) * (steps - 1) + (last,)

    def second_order(self, progress: float) -> bool:
        return progress >= self.options.first_order_fraction

    def outer_lr(self, base: float, progress: float) -> float:
        if not self.options.cosine_outer_lr:
            return base
        low = min(self.options.min_outer_lr, base)
        return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))

    def learned_values(self, params: Params, learner=None):
        if not self.options.learn_rates:
            return {}
        return {f"lslr.{n}@{s + 1}": params[f"lslr.{n}"][s].detach()
                for n in self.adapt_names() for s in range(params[f"lslr.{n}"].shape[0])}

    def inspect(self, params, history=None, learner=None):
        if not self.options.learn_rates:
            return []
        steps = params[f"lslr.{self.adapt_names()[0]}"].shape[0]
        rows = tuple((n, tuple(float(v) for v in params[f"lslr.{n}"].detach().cpu())) for n in self.adapt_names())
        return [Section("learned inner rate (LSLR): per parameter, at inner step 1..S", tuple(str(s + 1) for s in range(steps)), rows)]
