"""The meta-test protocol of Finn et al. 2017: fresh tasks, K shots, steps 0..S, mean and 95% CI.

``evaluate`` adapts the meta-parameters to N test tasks (600 by default) drawn from their own
seeded generator, all tasks at once, and records the query MSE after every inner step
s = 0..S at the run's inner learning rate (or a given one). The test tasks are drawn on the CPU
and then moved, so every device evaluates on the same tasks. The 95% confidence interval is
1.96 * std / sqrt(N), as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from engine.algorithms import Algorithm
from engine.model import Params
from engine.tasks import TaskFamily, make_task_family

EVAL_SEED = 12345  # test tasks come from their own stream, apart from the training seeds' defaults


@dataclass(frozen=True)
class EvalResult:
    algorithm: str
    shots: int
    tasks: int
    query: int
    inner_lr: float
    steps: list[int]
    mse_mean: list[float]
    mse_ci95: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    algorithm: Algorithm,
    params: Params,
    family: TaskFamily | str = "sinusoid",
    shots: int = 5,
    steps: int = 10,
    tasks: int = 600,
    query: int = 100,
    seed: int = EVAL_SEED,
    inner_lr: float | None = None,
    chunk: int = 1000,
) -> EvalResult:
    """MSE mean and 95% CI over ``tasks`` fresh tasks after 0..``steps`` inner steps."""
    if shots < 1 or tasks < 1 or query < 1 or steps < 0:
        raise ValueError("shots, tasks and query must be positive and steps must not be negative")
    if inner_lr is not None and not inner_lr > 0:
        raise ValueError(f"the inner learning rate must be positive, got {inner_lr}")
    device = next(iter(params.values())).device
    if isinstance(family, str):
        family = make_task_family(family)
    cpu_family = type(family)(device="cpu", **family.ranges)
    generator = torch.Generator().manual_seed(seed)
    batch = cpu_family.sample(tasks, shots, query, generator).to(device)
    losses = []  # (steps + 1, tasks)
    for start in range(0, tasks, chunk):
        sl = slice(start, start + chunk)
        history = algorithm.adapt(params, batch.x_support[sl], batch.y_support[sl], steps,
                                  batch.x_query[sl], batch.y_query[sl], inner_lr=inner_lr, keep_params=False)
        losses.append(torch.stack(history.query_loss))
    per_step = torch.cat(losses, dim=1).double().cpu()
    mean = per_step.mean(dim=1)
    std = per_step.std(dim=1, unbiased=True) if tasks > 1 else torch.zeros_like(mean)
    ci = 1.96 * std / math.sqrt(tasks)
    return EvalResult(
        algorithm=algorithm.name, shots=shots, tasks=tasks, query=query,
        inner_lr=algorithm.inner_lr if inner_lr is None else float(inner_lr),
        steps=list(range(steps + 1)), mse_mean=mean.tolist(), mse_ci95=ci.tolist(),
    )
