"""Losses and metrics, supplied by the task family: the core never hard-codes one.

A :class:`Loss` turns predictions and targets into one number per task (a mean over the task's
points), and names itself so that a fast path can say which losses it implements (the
hand-derived MLP kernels implement ``mse`` only; everything else takes the general ``torch.func``
path). Regression families give :class:`MeanSquaredError`; classification families give
:class:`CrossEntropy`, which also reports accuracy.

Shapes: predictions are ``(..., points, out)``; the result drops the last two dimensions, so a
batch of tasks ``(tasks, points, out)`` gives ``(tasks,)`` and one task ``(points, out)`` a scalar.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Loss:
    """Base class: ``name``, a per-task value, extra per-task metrics and a divergence bound."""

    name = "loss"
    label = "loss"  # how charts and tables name it
    target_dims = 2  # dimensions of one task's targets: (points, out)

    def per_task(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Named per-task metrics besides the loss (accuracy for classification)."""
        return {}

    def divergence_bound(self, target: Tensor) -> Tensor:
        """Per task, from a batch of tasks' targets: a loss above this means the adaptation blew up
        (see ``describe_bound``)."""
        raise NotImplementedError

    describe_bound = ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MeanSquaredError(Loss):
    """Mean squared error over a task's points and outputs."""

    name = "mse"
    label = "MSE"
    BOUND = 100.0
    describe_bound = "its query MSE is not finite or above 100 times the mean square of all test tasks' query targets"

    def per_task(self, prediction: Tensor, target: Tensor) -> Tensor:
        return (prediction - target).square().mean(dim=(-2, -1))

    def divergence_bound(self, target: Tensor) -> Tensor:
        # an error ten times the signal's typical size: no fit gets there, every blow-up does. Over
        # all tasks, not per task: a task of tiny amplitude is not diverged by an ordinary error.
        scale = self.BOUND * target.square().mean().clamp_min(1e-12)
        return scale.expand(target.shape[:-2])


class CrossEntropy(Loss):
    """Softmax cross-entropy over a task's points; targets are class indices ``(..., points)``."""

    name = "cross_entropy"
    label = "cross-entropy"
    target_dims = 1  # one task's targets are class indices (points,)
    describe_bound = "its query cross-entropy is not finite or above 100 times that of a uniform guess"

    def per_task(self, prediction: Tensor, target: Tensor) -> Tensor:
        logits = prediction.reshape(-1, prediction.shape[-1])
        losses = torch.nn.functional.cross_entropy(logits, target.reshape(-1), reduction="none")
        return losses.view(target.shape).mean(dim=-1)

    def metrics(self, prediction: Tensor, target: Tensor) -> dict[str, Tensor]:
        return {"accuracy": (prediction.argmax(dim=-1) == target).to(prediction.dtype).mean(dim=-1)}

    def divergence_bound(self, target: Tensor) -> Tensor:
        classes = int(target.max()) + 1 if target.numel() else 2
        return torch.full(target.shape[:-1], 100.0 * math.log(max(classes, 2)), dtype=torch.float64, device=target.device)


LOSSES = {cls.name: cls for cls in (MeanSquaredError, CrossEntropy)}
