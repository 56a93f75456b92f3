"""maml-tui's engine: a small, fast, UI-free meta-learning library on PyTorch.

Public API (see README.md): ``make_task_family``, ``MLP``, ``make_model``, ``make_algorithm``,
``RunConfig`` and friends, ``MetaLearner`` (the steppable outer loop), ``train``, ``evaluate``, run
directories, and ``registry`` (every task family, model and algorithm by name). Names are loaded
on first use, so ``import engine.registry`` (what the CLI's help needs) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ALGORITHMS": "engine.algorithms", "AdaptHistory": "engine.functional", "Algorithm": "engine.algorithms",
    "MetaStep": "engine.algorithms", "make_algorithm": "engine.algorithms",
    "AlgoConfig": "engine.config", "ModelConfig": "engine.config", "RunConfig": "engine.config",
    "TaskConfig": "engine.config", "TrainConfig": "engine.config",
    "MLP": "engine.model", "Model": "engine.model", "ContextModel": "engine.model", "make_model": "engine.model",
    "TaskBatch": "engine.tasks", "TaskFamily": "engine.tasks", "make_task_family": "engine.tasks",
    "MeanSquaredError": "engine.losses", "CrossEntropy": "engine.losses", "Loss": "engine.losses",
    "MetaLearner": "engine.trainer", "train": "engine.trainer", "DivergedError": "engine.trainer",
    "MamlTuiError": "engine.errors", "ConfigError": "engine.errors", "RunError": "engine.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
