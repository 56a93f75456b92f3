"""Algorithms by name: ``make_algorithm(name, model, ...)`` over the registry in ``engine.registry``."""

from __future__ import annotations

from typing import Any

from engine.algorithms.base import Algorithm, MetaStep, Section
from engine.functional import AdaptHistory
from engine.losses import Loss
from engine.model import Model
from engine.registry import ALGORITHMS as REGISTERED
from engine.registry import algorithm_class


# every registered algorithm's class (all are small modules over the same core)
ALGORITHMS: dict[str, type[Algorithm]] = {name: entry.load() for name, entry in REGISTERED.items()}


def make_algorithm(name: str, model: Model, inner_lr: float | None = None, inner_steps: int | None = None,
                   backend: str = "auto", loss: Loss | None = None, options: dict[str, Any] | None = None) -> Algorithm:
    """Build an algorithm by name around a functional model (``None``: the algorithm's default)."""
    return algorithm_class(name)(model, inner_lr=inner_lr, inner_steps=inner_steps, backend=backend,
                                 loss=loss, options=options)


__all__ = ["ALGORITHMS", "AdaptHistory", "Algorithm", "MetaStep", "Section", "make_algorithm"]
