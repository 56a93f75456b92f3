"""maml-tui's engine: a small, fast, UI-free meta-learning library on PyTorch.

Public API (see README.md): ``make_task_family``, ``MLP``, ``make_algorithm``, ``RunConfig`` and
friends, ``MetaLearner`` (the steppable outer loop), ``train``, ``evaluate``, run directories.
"""

from engine.algorithms import ALGORITHMS, AdaptHistory, Algorithm, MetaStep, make_algorithm
from engine.config import AlgoConfig, ModelConfig, RunConfig, TaskConfig, TrainConfig
from engine.model import MLP
from engine.tasks import TASK_FAMILIES, TaskBatch, TaskFamily, make_task_family

__all__ = [
    "ALGORITHMS", "AdaptHistory", "AlgoConfig", "Algorithm", "MLP", "MetaStep", "ModelConfig",
    "RunConfig", "TASK_FAMILIES", "TaskBatch", "TaskConfig", "TaskFamily", "TrainConfig",
    "make_algorithm", "make_task_family",
]
