"""CAVIA: fast context adaptation via meta-learning (Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson 2019,
arXiv:1810.03642).

The network takes, next to each input, a few context parameters (5 in the paper's regression
experiments). For every task the context starts at zero and only it adapts in the inner loop, at
the paper's large inner rate (1.0); the network itself is meta-learned in the outer loop, exactly
second order through the context steps. Adapting a handful of numbers instead of every weight
makes the inner loop cheap and hard to overfit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.algorithms.base import Algorithm, Section
from engine.model import ContextModel, Model, Params


@dataclass(frozen=True)
class CAVIAOptions:
    context_size: int = 5  # context parameters appended to the input

    def check(self) -> None:
        if not 1 <= self.context_size <= 10_000:
            raise ValueError(f"option context_size of cavia must be between 1 and 10000, got {self.context_size}")


class CAVIA(Algorithm):
    name = "cavia"
    paper = "Zintgraf, Shiarlis, Kurin, Hofmann, Whiteson 2019, arXiv:1810.03642"
    defaults = {"inner_lr": 1.0, "inner_steps": 1}
    Options = CAVIAOptions

    def build_model(self, model: Model) -> Model:
        widen = getattr(model, "with_in_features", None)
        if widen is None:
            raise ValueError(f"cavia appends its context to the input, which {model!r} cannot take")
        size = self.options.context_size
        return ContextModel(widen(model.in_features + size), size)

    def adapt_names(self) -> list[str]:
        return [ContextModel.CONTEXT]

    def model_params(self, params: Params) -> Params:
        return {n: params[n] for n in self.model.names if n in params and n != ContextModel.CONTEXT}

    def inner_start(self, params: Params, tasks: int) -> Params:
        like = next(iter(params.values()))
        context = torch.zeros(tasks, self.options.context_size, dtype=like.dtype, device=like.device)
        return {**self.model_params(params), ContextModel.CONTEXT: context}

    def inspect(self, params, history=None, learner=None):
        if history is None or not history.params or not history.params[0]:
            return []
        shown = list(range(len(history.params)))[-6:]  # the newest steps fit the panel
        values = [history.params[s][ContextModel.CONTEXT][0].detach().cpu() for s in shown]
        rows = tuple((f"context {i + 1}", tuple(float(v[i]) for v in values)) for i in range(self.options.context_size))
        return [Section("context of this task after inner step 0..S", tuple(str(s) for s in shown), rows)]
