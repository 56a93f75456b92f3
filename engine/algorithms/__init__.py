"""The algorithm registry: ``make_algorithm(name, model, inner_lr=..., inner_steps=...)``."""

from __future__ import annotations

from engine.algorithms.anil import ANIL
from engine.algorithms.base import AdaptHistory, Algorithm, MetaStep
from engine.algorithms.baselines import Pretrain, Scratch
from engine.algorithms.fomaml import FOMAML
from engine.algorithms.maml import MAML
from engine.algorithms.metasgd import MetaSGD
from engine.algorithms.reptile import Reptile
from engine.model import MLP

BACKENDS = ("auto", "fused", "lowrank", "closed_form", "torch.func")

ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (MAML, FOMAML, Reptile, ANIL, MetaSGD, Pretrain, Scratch)
}


def make_algorithm(name: str, model: MLP, inner_lr: float = 0.01, inner_steps: int = 1, backend: str = "auto") -> Algorithm:
    """Build an algorithm by name (one of ``ALGORITHMS``) around a functional model."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}") from None
    if not inner_lr > 0:
        raise ValueError(f"the inner learning rate must be positive, got {inner_lr}")
    if inner_steps < 0:
        raise ValueError(f"the number of inner steps must not be negative, got {inner_steps}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    algorithm = cls(model, inner_lr=inner_lr, inner_steps=inner_steps, backend=backend)
    if backend == "fused" and (inner_steps != 1 or model.activation != "relu" or algorithm.head_only
                               or algorithm.learns_inner_lr or type(algorithm).meta_step is not Algorithm.meta_step):
        raise ValueError("the fused backend covers maml and fomaml with one inner step on a relu network")
    return algorithm


__all__ = ["ALGORITHMS", "AdaptHistory", "Algorithm", "MetaStep", "make_algorithm"]
