"""Prototypical networks (Snell, Swersky, Zemel 2017, arXiv:1703.05175): the metric-based comparison.

No inner loop and no head to learn: each class's prototype is the mean embedding of its support
images, ``c_k = mean f(x_i) over y_i = k``, and a query is classified by a softmax over negative
squared distances, ``p(k | x) = softmax_k(-||f(x) - c_k||^2)``. Only the embedding (the model
without its head) is meta-learned, through the prototypes, with the query cross-entropy.

As Snell et al. note, ``-||f - c_k||^2 = 2 c_k . f - ||c_k||^2 - ||f||^2`` and the last term is the
same for every class, so the classifier is a linear head with ``W_k = 2 c_k`` and
``b_k = -||c_k||^2``: the same softmax, the same loss. That head is what :meth:`solve` returns, so
protonet meta-trains, adapts, evaluates and is inspected as R2-D2 does, with this head in place of
the ridge solve (step 0: a zero head, a uniform guess; every later step: the prototypes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from engine.algorithms.base import Section
from engine.algorithms.r2d2 import R2D2
from engine.model import Params


def prototypes(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Class means of support features: (tasks, K, F) and labels (tasks, K) -> (tasks, N, F)."""
    onehot = torch.nn.functional.one_hot(labels.long(), ways).to(features.dtype)  # (tasks, K, N)
    counts = onehot.sum(dim=1).clamp_min(1.0).unsqueeze(-1)  # (tasks, N, 1)
    return torch.bmm(onehot.transpose(1, 2), features) / counts


class ProtoNet(R2D2):
    name = "protonet"
    paper = "Snell, Swersky, Zemel 2017, arXiv:1703.05175"
    defaults = {"inner_lr": 1.0, "inner_steps": 1}  # no inner rate: the prototypes are computed, not learned steps
    Options = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.loss.name != "cross_entropy":
            raise ValueError("protonet classifies by distances to class prototypes; pick a classification task family "
                             "such as digits")

    def init(self, generator: torch.Generator, device=None, dtype=torch.float32) -> Params:
        return {n: v for n, v in self.model.init(generator, device, dtype).items() if n not in self.model.head_names}

    def solve(self, params: Params, x_support: Tensor, y_support: Tensor) -> Params:
        """The prototypes as a linear head per task: weight 2 c_k (tasks, F, N), bias -||c_k||^2 (tasks, N)."""
        centres = prototypes(self.model.features(params, x_support), y_support, self.model.out_features)
        head_weight, head_bias = self.model.head_names
        return {head_weight: 2.0 * centres.transpose(1, 2), head_bias: -centres.square().sum(-1)}

    def prior_head(self, params: Params, tasks: int) -> Params:
        """Before the support set: a zero head (every class equally likely)."""
        shapes = self.model.shapes()
        like = next(iter(params.values()))
        return {name: torch.zeros(tasks, *shapes[name], dtype=like.dtype, device=like.device) for name in self.model.head_names}

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        return "prototypes (class means)"

    def learned_values(self, params: Params, learner=None):
        return {}

    def inspect(self, params, history=None, learner=None):
        return [Section("prototypical network", ("value",),
                        (("embedding parameters", (float(sum(v.numel() for v in params.values())),)),))]
