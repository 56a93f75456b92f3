"""The one registry of what the engine offers: task families, models and algorithms.

Every list of names in the project is read from here: config validation, the CLI's choices and
help, ``maml-tui info`` and the explorer's pickers (the engine announces the registry to the UI
process, which never imports the engine). An entry names the class that implements it as
``"module:Class"`` and is loaded only when used, so this module imports nothing heavy: the CLI can
list every name in its ``--help`` without importing torch.

Adding an algorithm is its own module plus one line in :data:`ALGORITHMS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, where it lives and one line saying what it is."""

    name: str
    target: str  # "package.module:Class"
    summary: str
    kind: str = ""  # task families: "regression" or "classification"; algorithms: "classification" when only that

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _entries(*rows: tuple[str, ...], kind: str = "") -> dict[str, Entry]:
    return {row[0]: Entry(row[0], row[1], row[2], row[3] if len(row) > 3 else kind) for row in rows}


TASKS: dict[str, Entry] = _entries(
    ("sinusoid", "engine.tasks:Sinusoid", "A sin(x - phase), Finn et al. 2017"),
    ("linear", "engine.tasks:Linear", "slope x + intercept"),
    ("quadratic", "engine.tasks:Quadratic", "s (x - c)^2 + b"),
    ("sine_line", "engine.tasks:SineLine", "a sinusoid or a line, one of two at random (multimodal)"),
    ("harmonic", "engine.tasks:Harmonic", "a1 sin(w x + b1) + a2 sin(2 w x + b2)"),
    ("tanh", "engine.tasks:Tanh", "s tanh(x - c) + b"),
    ("abs", "engine.tasks:Abs", "s |x - c| + b"),
    ("digits", "engine.classification:Digits", "N-way K-shot classification of 8x8 digits, rotations as classes",
     "classification"),
    ("omniglot", "engine.classification:Omniglot", "N-way K-shot classification of Omniglot characters at 28x28 (Lake et al. 2015)",
     "classification"),
    kind="regression",
)

MODELS: dict[str, Entry] = _entries(
    ("mlp", "engine.model:MLP", "fully connected network, functional parameters"),
    ("conv4", "engine.conv:Conv4", "conv 3x3, batch norm, ReLU, max-pool blocks and a linear head (Finn et al. 2017), images only"),
)

ALGORITHMS: dict[str, Entry] = _entries(
    ("maml", "engine.algorithms.maml:MAML", "exact second-order MAML (Finn et al. 2017)"),
    ("fomaml", "engine.algorithms.fomaml:FOMAML", "first-order MAML (Finn et al. 2017)"),
    ("reptile", "engine.algorithms.reptile:Reptile", "move towards the adapted weights (Nichol et al. 2018)"),
    ("anil", "engine.algorithms.anil:ANIL", "adapt the head only (Raghu et al. 2020)"),
    ("metasgd", "engine.algorithms.metasgd:MetaSGD", "learned per-parameter inner rates (Li et al. 2017)"),
    ("mamlpp", "engine.algorithms.mamlpp:MAMLPlusPlus", "MAML++: per-layer per-step rates, multi-step loss (Antoniou et al. 2019)"),
    ("cavia", "engine.algorithms.cavia:CAVIA", "adapt context inputs only (Zintgraf et al. 2019)"),
    ("alphamaml", "engine.algorithms.alphamaml:AlphaMAML", "inner and outer rates by hypergradient descent (Behl et al. 2019)"),
    ("r2d2", "engine.algorithms.r2d2:R2D2", "closed-form ridge-regression head (Bertinetto et al. 2019)"),
    ("imaml", "engine.algorithms.imaml:IMAML", "implicit gradients: a proximal inner loop, CG on Hessian-vector products (Rajeswaran et al. 2019)"),
    ("hfmaml", "engine.algorithms.hfmaml:HFMAML", "Hessian-free MAML: Hessian-vector products by finite differences (Fallah et al. 2020)"),
    ("pretrain", "engine.algorithms.baselines:Pretrain", "baseline: one network on all tasks, fine-tuned"),
    ("scratch", "engine.algorithms.baselines:Scratch", "baseline: a random network, fine-tuned"),
    ("protonet", "engine.algorithms.protonet:ProtoNet", "prototypical networks: nearest class mean of embeddings (Snell et al. 2017)",
     "classification"),
)


def lookup(kind: str, table: dict[str, Entry], name: str) -> Entry:
    """The entry ``name`` of ``table``; ``ValueError`` with one sentence listing the choices."""
    try:
        return table[name]
    except (KeyError, TypeError):
        from engine.errors import ConfigError, shown  # torch-free, like this module

        raise ConfigError(f"unknown {kind} {shown(name)}; choose one of {', '.join(table)}") from None


def algorithm_class(name: str):
    return lookup("algorithm", ALGORITHMS, name).load()


def is_classification(task: str) -> bool:
    """Whether the task family ``task`` classifies (episodes of images) rather than regresses."""
    entry = TASKS.get(task) if isinstance(task, str) else None
    return entry is not None and entry.kind == "classification"


def regression_algorithms() -> list[str]:
    """The algorithms that run on regression families (every one but the classification-only ones)."""
    return [name for name, entry in ALGORITHMS.items() if entry.kind != "classification"]


def task_class(name: str):
    return lookup("task family", TASKS, name).load()


def model_class(name: str):
    return lookup("model", MODELS, name).load()
