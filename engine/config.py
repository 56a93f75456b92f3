"""Frozen dataclass configs for a meta-learning run.

A run is fully described by a :class:`RunConfig`: which task family, which model, which
algorithm and how to train it. Configs are plain data (JSON round-trippable through
:meth:`RunConfig.to_dict` / :meth:`RunConfig.from_dict`) so run directories, the CLI and the
explorer all speak the same language. Validation lives here too: every user-facing entry point
calls :meth:`RunConfig.validate` and turns its ``ValueError`` into one clear sentence. Names are
checked against the one registry (``engine.registry``). An inner rate or step count of ``None``
means the algorithm's own default; :meth:`RunConfig.resolved` fills them in, and that is what a run
directory stores.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError, shown
from engine import registry

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "silu")


# the largest value each flag takes (stated in --help); beyond them a value is a typo or an attack
LIMITS: dict[str, float] = {
    "--steps": 10**12, "--meta-batch": 100_000, "--shots": 100_000, "--query": 100_000, "--inner-steps": 1_000,
    "--hidden": 65_536, "--seed": 2**63 - 1, "log_every": 10**12, "checkpoint_every": 10**12,
    "--inner-lr": 1e6, "--outer-lr": 1e3,
}
MAX_LAYERS = 64


def _amount(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) and value < 10**15 else f"{value:g}"


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when it cannot be told)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


@dataclass(frozen=True)
class TaskConfig:
    """Which task family to sample from; ``ranges`` overrides its parameter ranges."""

    name: str = "sinusoid"  # one of engine.registry.TASKS
    ranges: dict[str, Any] = field(default_factory=dict)  # e.g. {"amplitude": [0.1, 5.0]}


@dataclass(frozen=True)
class ModelConfig:
    """The functional model that every algorithm adapts."""

    kind: str = "mlp"  # one of engine.registry.MODELS
    hidden: tuple[int, ...] = (40, 40)  # hidden layer widths; () is a linear model
    activation: str = "relu"  # one of ACTIVATIONS
    init: str = "torch"  # "torch" (nn.Linear default) or "finn" (MAML reference code: N(0, 0.01), zero bias)


@dataclass(frozen=True)
class AlgoConfig:
    """The meta-learning algorithm and its inner loop."""

    name: str = "maml"  # one of engine.registry.ALGORITHMS
    inner_lr: float | None = None  # alpha: step size of the inner SGD steps [None: the algorithm's, 0.001 for maml]
    inner_steps: int | None = None  # inner gradient steps during meta-training [None: the algorithm's, 1 for maml]
    options: dict[str, Any] = field(default_factory=dict)  # the algorithm's own settings, e.g. {"context_size": 5}


@dataclass(frozen=True)
class TrainConfig:
    """The outer loop: meta-batches, optimizer, logging and checkpoint cadence."""

    steps: int = 70_000  # outer (meta) iterations
    meta_batch_size: int = 25  # tasks per meta-batch
    shots: int = 10  # K: support points per task
    query: int = 10  # query points per task
    outer_lr: float = 1e-3  # beta: Adam learning rate of the outer loop
    seed: int = 0  # seeds parameter init and task sampling
    log_every: int = 100  # outer steps between metric records
    checkpoint_every: int = 5_000  # outer steps between periodic checkpoints


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to reproduce a run."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"]["hidden"] = list(self.model.hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"the run config must be a mapping of sections, got a {type(data).__name__}")
        for section in data:
            if section not in ("task", "model", "algo", "train"):
                raise ConfigError(f"the run config has an unknown section {shown(section)}; it has task, model, algo and train")
            if not isinstance(data[section], dict):
                raise ConfigError(f"the run config's {shown(section)} must be a mapping, got a {type(data[section]).__name__}")
        try:
            model = dict(data.get("model", {}))
            if "hidden" in model:
                if not isinstance(model["hidden"], (list, tuple)):
                    raise ConfigError(f"the model's hidden widths must be a list of whole numbers, got {shown(model['hidden'])}")
                model["hidden"] = tuple(model["hidden"])  # validate() checks each is a whole number
            return cls(
                task=TaskConfig(**data.get("task", {})),
                model=ModelConfig(**model),
                algo=AlgoConfig(**data.get("algo", {})),
                train=TrainConfig(**data.get("train", {})),
            )
        except TypeError as error:  # unknown or missing keys
            raise ConfigError(f"the run config is not valid: {error}") from None

    def resolved(self) -> "RunConfig":
        """The config with the algorithm's defaults filled in for every ``None``."""
        cls = registry.algorithm_class(self.algo.name)
        changes = {key: cls.defaults[key] for key in ("inner_lr", "inner_steps") if getattr(self.algo, key) is None}
        return self.replace(algo=changes) if changes else self

    def replace(self, **sections: Any) -> "RunConfig":
        """Return a copy with some fields changed, e.g. ``replace(algo={"inner_lr": 0.02})``."""
        updated = {}
        for name, changes in sections.items():
            updated[name] = dataclasses.replace(getattr(self, name), **changes)
        return dataclasses.replace(self, **updated)

    def validate(self) -> "RunConfig":
        """Raise ``ValueError`` with one clear sentence if any field is out of range (see ``LIMITS``),
        of the wrong type, or would need more memory than this machine has."""
        self._check_types()
        registry.lookup("task family", registry.TASKS, self.task.name).load().check_ranges(self.task.ranges)
        model = registry.lookup("model", registry.MODELS, self.model.kind).load()
        if getattr(model, "images_only", False) and not registry.is_classification(self.task.name):
            raise ConfigError(f"the {self.model.kind} model takes images, and task family {self.task.name} gives "
                              "numbers; pick an image task family such as digits, or the mlp model")
        algorithm = registry.algorithm_class(self.algo.name)
        if not isinstance(self.algo.options, dict):
            raise ConfigError("the algorithm options must be a mapping of names to values")
        algorithm.parse_options(self.algo.options)
        if self.model.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {shown(self.model.activation)}; choose one of {', '.join(ACTIVATIONS)}")
        if self.model.init not in ("torch", "finn"):
            raise ConfigError(f"unknown initialisation {shown(self.model.init)}; choose torch or finn")
        if getattr(model, "images_only", False) and not self.model.hidden:
            raise ConfigError(f"the {self.model.kind} model needs at least one block: give --hidden its channels, e.g. 64,64,64,64")
        if any(h < 1 for h in self.model.hidden):
            raise ConfigError("hidden layer sizes must be positive integers")
        positive = {
            "--steps": self.train.steps + 1,  # 0 steps is allowed (evaluate the initialisation)
            "--meta-batch": self.train.meta_batch_size,
            "--shots": self.train.shots,
            "--query": self.train.query,
            "--inner-steps": 1 if self.algo.inner_steps is None else self.algo.inner_steps + 1,  # 0 is allowed
            "log_every": self.train.log_every,
            "checkpoint_every": self.train.checkpoint_every,
        }
        for flag, value in positive.items():
            if value < 1:
                raise ConfigError(f"{flag} must be positive, got {value - 1 if flag in ('--steps', '--inner-steps') else value}")
        if self.algo.inner_lr is not None and not self.algo.inner_lr > 0:
            raise ConfigError(f"--inner-lr must be positive, got {self.algo.inner_lr}")
        if not self.train.outer_lr > 0:
            raise ConfigError(f"--outer-lr must be positive, got {self.train.outer_lr}")
        if self.train.seed < 0:
            raise ConfigError(f"--seed must be zero or positive, got {self.train.seed}")
        for flag, value in self._limited().items():
            if value > LIMITS[flag]:
                raise ConfigError(f"{flag} must be at most {_amount(LIMITS[flag])}, got {_amount(value)}")
        if len(self.model.hidden) > MAX_LAYERS:
            raise ConfigError(f"--hidden may name at most {MAX_LAYERS} layers, got {len(self.model.hidden)}")
        need = self.memory_estimate()
        have = physical_memory()
        if have and need > 0.8 * have:
            raise ConfigError(f"one meta-step of this run needs about {need / 2**30:,.1f} GiB (meta-batch x points x "
                             f"widths x inner steps), more than this machine's {have / 2**30:,.0f} GiB allow; lower "
                             "--meta-batch, --shots, --query, --hidden or --inner-steps")
        return self

    def _check_types(self) -> None:
        """Every field of the type it must have (a config file can hold anything)."""
        whole = {"--steps": self.train.steps, "--meta-batch": self.train.meta_batch_size, "--shots": self.train.shots,
                 "--query": self.train.query, "--seed": self.train.seed, "log_every": self.train.log_every,
                 "checkpoint_every": self.train.checkpoint_every}
        if self.algo.inner_steps is not None:
            whole["--inner-steps"] = self.algo.inner_steps
        for flag, value in whole.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{flag} must be a whole number, got {shown(value)}")
        real = {"--outer-lr": self.train.outer_lr}
        if self.algo.inner_lr is not None:
            real["--inner-lr"] = self.algo.inner_lr
        for flag, value in real.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{flag} must be a finite number, got {shown(value)}")
        if not isinstance(self.model.hidden, tuple) or any(isinstance(h, bool) or not isinstance(h, int) for h in self.model.hidden):
            raise ConfigError(f"--hidden must be whole layer widths, got {shown(self.model.hidden)}")
        for flag, value in (("--task", self.task.name), ("--algo", self.algo.name), ("model kind", self.model.kind),
                            ("--activation", self.model.activation), ("model init", self.model.init)):
            if not isinstance(value, str):
                raise ConfigError(f"{flag} must be a name, got {shown(value)}")

    def _limited(self) -> dict[str, float]:
        values = {"--steps": self.train.steps, "--meta-batch": self.train.meta_batch_size, "--shots": self.train.shots,
                  "--query": self.train.query, "--seed": self.train.seed, "log_every": self.train.log_every,
                  "checkpoint_every": self.train.checkpoint_every, "--outer-lr": self.train.outer_lr,
                  "--hidden": max(self.model.hidden, default=1)}
        if self.algo.inner_steps is not None:
            values["--inner-steps"] = self.algo.inner_steps
        if self.algo.inner_lr is not None:
            values["--inner-lr"] = self.algo.inner_lr
        return values

    def memory_estimate(self) -> float:
        """Bytes one second-order meta-step holds at once, roughly and on the high side: every task's
        activations and their gradients through every inner step, and every task's adapted weights."""
        train, hidden = self.train, self.model.hidden
        steps = (self.algo.inner_steps if self.algo.inner_steps is not None else 5) + 1
        if registry.is_classification(self.task.name):
            return self._image_memory_estimate(steps)
        widths = [1, *hidden, 1]
        weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
        points = train.shots + train.query
        activations = train.meta_batch_size * points * sum(widths) * steps * 6
        adapted = train.meta_batch_size * weights * steps * 3
        return 4.0 * (activations + adapted)

    def _image_memory_estimate(self, steps: int) -> float:
        """As :meth:`memory_estimate`, for N-way episodes of images (shots and query count per class):
        every block's maps (convolution, norm, activation: about six values each with their gradients)."""
        train, hidden = self.train, self.model.hidden
        ways = int(self.task.ranges.get("ways", 5)) if isinstance(self.task.ranges, dict) else 5
        ways = ways if isinstance(ways, int) and ways > 0 else 5
        side, channels = 28, 1  # the largest images a family gives (Omniglot's 28x28)
        images = train.meta_batch_size * ways * (train.shots + train.query)
        if self.model.kind == "conv4":
            maps, widths = 0, [channels, *hidden]
            for width in hidden:
                maps += width * side * side
                side = -(-side // 2)
            weights = sum(a * b * 9 + 3 * b for a, b in zip(widths, widths[1:])) + widths[-1] * side * side * ways
        else:
            maps = sum(hidden) + ways
            widths = [channels * side * side, *hidden, ways]
            weights = sum(a * b + b for a, b in zip(widths, widths[1:]))
        return 4.0 * (images * maps * steps * 6 + train.meta_batch_size * weights * steps * 3)
