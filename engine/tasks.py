"""Task families for few-shot regression and the batches they sample.

A task family draws task parameters (amplitude and phase of a sinusoid, slope and intercept of
a line, ...) from configurable ranges, and then support and query points for each task. All
randomness comes from an explicit ``torch.Generator`` and happens on the family's device, so a
seed reproduces the exact tasks on a given device. Families also expose the ground-truth function
(:meth:`TaskFamily.truth`) so the explorer can draw it. Ranges follow Finn et al. 2017 and the
regression families listed in ``ANCHORS.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from engine.errors import ConfigError, shown
from engine.losses import Loss, MeanSquaredError


@dataclass(frozen=True)
class TaskBatch:
    """A meta-batch of regression tasks; tensors live on the family's device."""

    x_support: Tensor  # (tasks, shots, 1)
    y_support: Tensor  # (tasks, shots, 1)
    x_query: Tensor  # (tasks, query, 1)
    y_query: Tensor  # (tasks, query, 1)
    params: dict[str, Tensor]  # task parameters, each (tasks,)

    @property
    def num_tasks(self) -> int:
        return self.x_support.shape[0]

    def task(self, index: int) -> "TaskBatch":
        """The single task ``index`` as a batch of one."""
        sl = slice(index, index + 1)
        return TaskBatch(
            self.x_support[sl], self.y_support[sl], self.x_query[sl], self.y_query[sl],
            {name: value[sl] for name, value in self.params.items()},
        )

    def to(self, device: torch.device | str) -> "TaskBatch":
        return TaskBatch(
            self.x_support.to(device), self.y_support.to(device),
            self.x_query.to(device), self.y_query.to(device),
            {name: value.to(device) for name, value in self.params.items()},
        )


def _uniform(low: float, high: float, n: int, generator: torch.Generator, device, dtype) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=dtype) * (high - low) + low


RANGE_LIMIT = 10_000.0  # task parameters and inputs stay within +-this: beyond it float32 losses overflow


class TaskFamily:
    """Base class: subclasses set ``name``, ``defaults`` and implement ``sample_params``/``truth``."""

    name = "base"
    defaults: dict[str, Any] = {}
    loss: Loss = MeanSquaredError()  # regression families: mean squared error
    input_dim = 1  # features of x
    output_dim = 1  # model outputs per point

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, **ranges: Any):
        self.ranges = self.check_ranges(ranges)
        self.device = torch.device(device)
        self.dtype = dtype

    @classmethod
    def check_ranges(cls, ranges: Any) -> dict[str, Any]:
        """The family's ranges with ``ranges`` laid over them; :class:`ConfigError` names the first one
        that is unknown, not ``[low, high]`` with low <= high (low < high for ``x``), not finite, beyond
        ``RANGE_LIMIT``, or (for a probability such as ``p_sine``) outside [0, 1]."""
        if not isinstance(ranges, dict):
            raise ConfigError(f"the ranges of task family {shown(cls.name)} must be a mapping of names to [low, high], got {shown(ranges)}")
        unknown = sorted(str(k) for k in set(ranges) - set(cls.defaults))
        if unknown:
            raise ConfigError(f"task family {shown(cls.name)} has no range {shown(unknown[0])}; it has {', '.join(sorted(cls.defaults))}")
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= RANGE_LIMIT  # noqa: E731
        checked = dict(cls.defaults)
        for key, value in ranges.items():
            if isinstance(cls.defaults[key], tuple):
                if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(number(v) for v in value)):
                    raise ConfigError(f"range {shown(key)} of task family {shown(cls.name)} must be [low, high], two finite numbers "
                                      f"within ±{RANGE_LIMIT:,g}, got {shown(value)}")
                low, high = float(value[0]), float(value[1])
                if not (low < high if key == "x" else low <= high):
                    raise ConfigError(f"range {shown(key)} of task family {shown(cls.name)} must be [low, high] with low "
                                      f"{'<' if key == 'x' else '<='} high, got {shown(value)}")
                checked[key] = (low, high)
            else:
                if not (number(value) and 0 <= value <= 1):
                    raise ConfigError(f"{shown(key)} of task family {shown(cls.name)} is a probability between 0 and 1, got {shown(value)}")
                checked[key] = float(value)
        return checked

    # -- subclasses -----------------------------------------------------------------------------
    def sample_params(self, num_tasks: int, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def truth(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """y for inputs ``x`` of shape (tasks, points, 1) given task parameters of shape (tasks,)."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    @property
    def x_range(self) -> tuple[float, float]:
        return tuple(self.ranges["x"])

    def sample_x(self, num_tasks: int, points: int, generator: torch.Generator) -> Tensor:
        low, high = self.x_range
        return _uniform(low, high, num_tasks * points, generator, self.device, self.dtype).view(num_tasks, points, 1)

    def sample(self, num_tasks: int, shots: int, query: int, generator: torch.Generator) -> TaskBatch:
        """Sample ``num_tasks`` tasks with ``shots`` support and ``query`` query points each."""
        if num_tasks < 1 or shots < 1 or query < 0:
            raise ValueError("num_tasks and shots must be positive and query must not be negative")
        params = self.sample_params(num_tasks, generator)
        x = self.sample_x(num_tasks, shots + query, generator)  # (tasks, shots + query, 1)
        y = self.truth(x, params)
        return TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:], params)

    def _u(self, key: str, n: int, generator: torch.Generator) -> Tensor:
        low, high = self.ranges[key]
        return _uniform(low, high, n, generator, self.device, self.dtype)


def _col(value: Tensor) -> Tensor:
    return value.view(-1, 1, 1)  # (tasks,) -> (tasks, 1, 1) to broadcast over points


class Sinusoid(TaskFamily):
    """y = A sin(x - phase), Finn et al. 2017."""

    name = "sinusoid"
    defaults = {"amplitude": (0.1, 5.0), "phase": (0.0, math.pi), "x": (-5.0, 5.0)}

    def sample_params(self, n, generator):
        return {"amplitude": self._u("amplitude", n, generator), "phase": self._u("phase", n, generator)}

    def truth(self, x, params):
        return _col(params["amplitude"]) * torch.sin(x - _col(params["phase"]))


class Linear(TaskFamily):
    """y = slope x + intercept."""

    name = "linear"
    defaults = {"slope": (-3.0, 3.0), "intercept": (-3.0, 3.0), "x": (-5.0, 5.0)}

    def sample_params(self, n, generator):
        return {"slope": self._u("slope", n, generator), "intercept": self._u("intercept", n, generator)}

    def truth(self, x, params):
        return _col(params["slope"]) * x + _col(params["intercept"])


class Quadratic(TaskFamily):
    """y = s (x - c)^2 + b with |s| uniform and a random sign."""

    name = "quadratic"
    defaults = {"scale": (0.02, 0.15), "center": (-3.0, 3.0), "offset": (-3.0, 3.0), "x": (-5.0, 5.0)}

    def sample_params(self, n, generator):
        magnitude = self._u("scale", n, generator)
        sign = torch.randint(0, 2, (n,), generator=generator, device=self.device).to(self.dtype) * 2 - 1
        return {"scale": magnitude * sign, "center": self._u("center", n, generator), "offset": self._u("offset", n, generator)}

    def truth(self, x, params):
        return _col(params["scale"]) * (x - _col(params["center"])) ** 2 + _col(params["offset"])


class Tanh(TaskFamily):
    """y = s tanh(x - c) + b."""

    name = "tanh"
    defaults = {"scale": (-3.0, 3.0), "center": (-3.0, 3.0), "offset": (-3.0, 3.0), "x": (-5.0, 5.0)}

    def sample_params(self, n, generator):
        return {key: self._u(key, n, generator) for key in ("scale", "center", "offset")}

    def truth(self, x, params):
        return _col(params["scale"]) * torch.tanh(x - _col(params["center"])) + _col(params["offset"])


class Abs(Tanh):
    """y = s |x - c| + b."""

    name = "abs"

    def truth(self, x, params):
        return _col(params["scale"]) * torch.abs(x - _col(params["center"])) + _col(params["offset"])


class SineLine(TaskFamily):
    """A sinusoid or a line with probability 1/2 each (the multimodal benchmark)."""

    name = "sine_line"
    defaults = {**Sinusoid.defaults, **Linear.defaults, "p_sine": 0.5}

    def sample_params(self, n, generator):
        params = {
            "amplitude": self._u("amplitude", n, generator),
            "phase": self._u("phase", n, generator),
            "slope": self._u("slope", n, generator),
            "intercept": self._u("intercept", n, generator),
        }
        draw = torch.rand(n, generator=generator, device=self.device, dtype=self.dtype)
        params["is_sine"] = (draw < float(self.ranges["p_sine"])).to(self.dtype)
        return params

    def truth(self, x, params):
        sine = _col(params["amplitude"]) * torch.sin(x - _col(params["phase"]))
        line = _col(params["slope"]) * x + _col(params["intercept"])
        return torch.where(_col(params["is_sine"]) > 0.5, sine, line)


class Harmonic(TaskFamily):
    """y = a1 sin(w x + b1) + a2 sin(2 w x + b2), w ~ U[5, 7], a ~ N(0, 1), b ~ U[0, 2 pi]."""

    name = "harmonic"
    defaults = {"frequency": (5.0, 7.0), "phase": (0.0, 2 * math.pi), "x": (-5.0, 5.0)}

    def sample_params(self, n, generator):
        a = torch.randn(2, n, generator=generator, device=self.device, dtype=self.dtype)
        return {
            "frequency": self._u("frequency", n, generator),
            "a1": a[0], "a2": a[1],
            "b1": self._u("phase", n, generator), "b2": self._u("phase", n, generator),
        }

    def truth(self, x, params):
        w = _col(params["frequency"])
        return _col(params["a1"]) * torch.sin(w * x + _col(params["b1"])) + _col(params["a2"]) * torch.sin(
            2 * w * x + _col(params["b2"])
        )


def make_task_family(name: str = "sinusoid", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, **ranges: Any) -> TaskFamily:
    """Build a task family by name (see ``engine.registry.TASKS``), e.g.
    ``make_task_family("sinusoid", amplitude=(0.1, 5.0))``."""
    from engine.registry import task_class

    return task_class(name)(device=device, dtype=dtype, **ranges)
