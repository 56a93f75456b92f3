"""The meta-test protocol of Finn et al. 2017: fresh tasks, K shots, steps 0..S, reported as a careful paper does.

``evaluate`` adapts the meta-parameters to N test tasks (600 by default) drawn from their own
seeded generator, all tasks at once, and records the query loss after every inner step
s = 0..S at the run's inner learning rate (or a given one). The test tasks are drawn on the CPU
and then moved, so every device evaluates on the same tasks.

Per step it reports the mean with its 95% confidence interval (1.96 * std / sqrt(n), as in the
paper), the median, and how many tasks diverged: a task diverged when its loss is not finite or
above the loss's stated bound (for MSE: 100 times the mean square of the task's targets, an
error ten times the signal). Mean, CI and median are over the tasks that did not diverge, so one
blow-up among 600 tasks shows as a count instead of turning the column into ``inf ± nan``; every
number is finite or ``None``, so the result is strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch

from engine.algorithms import Algorithm
from engine.model import Params
from engine.tasks import TaskFamily, make_task_family

EVAL_SEED = 12345  # test tasks come from their own stream, apart from the training seeds' defaults


@dataclass(frozen=True)
class StepStats:
    """One inner step's numbers over the test tasks (``None`` where no task is left to average)."""

    mean: float | None
    ci95: float | None
    median: float | None
    diverged: int


@dataclass(frozen=True)
class EvalResult:
    algorithm: str
    shots: int
    tasks: int
    query: int
    inner_lr: float
    loss: str  # the loss's name ("mse", "cross_entropy")
    steps: list[int]
    mean: list[float | None]  # per step, over the tasks that did not diverge
    ci95: list[float | None]
    median: list[float | None]
    diverged: list[int]  # per step, tasks whose loss was not finite or above the bound
    diverged_rule: str
    metrics: dict[str, list[float | None]] = field(default_factory=dict)  # e.g. accuracy: per-step mean
    metrics_ci95: dict[str, list[float | None]] = field(default_factory=dict)  # their 95% CI over the tasks
    split: str = ""  # classification: the split of classes the test episodes come from ("test")
    ways: int | None = None  # classification: classes per episode

    def step(self, index: int) -> StepStats:
        return StepStats(self.mean[index], self.ci95[index], self.median[index], self.diverged[index])

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(per_step: torch.Tensor, bound: torch.Tensor) -> list[StepStats]:
    """Stats of a (steps, tasks) loss table, with per-task divergence bounds (tasks,)."""
    out = []
    for losses in per_step.double():
        healthy = torch.isfinite(losses) & (losses <= bound)
        kept = losses[healthy]
        n = kept.numel()
        if n == 0:
            out.append(StepStats(None, None, None, int(losses.numel())))
            continue
        std = float(kept.std(unbiased=True)) if n > 1 else 0.0
        out.append(StepStats(float(kept.mean()), 1.96 * std / math.sqrt(n), float(kept.median()),
                             int(losses.numel() - n)))
    return out


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
    chunk: int | None = None,
) -> EvalResult:
    """Loss mean, 95% CI, median and divergence count over ``tasks`` fresh tasks after 0..``steps`` inner steps."""
    if shots < 1 or tasks < 1 or query < 1 or steps < 0:
        raise ValueError("shots, tasks and query must be positive and steps must not be negative")
    if inner_lr is not None and not inner_lr > 0:
        raise ValueError(f"the inner learning rate must be positive, got {inner_lr}")
    device = next(iter(params.values())).device
    if isinstance(family, str):
        family = make_task_family(family)
    cpu_family = type(family)(device="cpu", **family.ranges)
    if hasattr(cpu_family, "with_split"):  # classification: episodes of the meta-test classes, never seen in training
        cpu_family = cpu_family.with_split("test")
    generator = torch.Generator().manual_seed(seed)
    batch = cpu_family.sample(tasks, shots, query, generator).to(device)
    if chunk is None:  # tasks adapted at once: all of a regression's; a conv net's episodes hold whole images
        chunk = 1000 if batch.x_support.dim() <= 3 else 50
    losses, metrics = [], {}  # (steps + 1, tasks) each
    for start in range(0, tasks, chunk):
        sl = slice(start, start + chunk)
        history = algorithm.adapt(params, batch.x_support[sl], batch.y_support[sl], steps,
                                  batch.x_query[sl], batch.y_query[sl], inner_lr=inner_lr, keep_params=False)
        losses.append(torch.stack(history.query_loss))
        for name in (history.query_metrics[0] if history.query_metrics else {}):
            metrics.setdefault(name, []).append(torch.stack([m[name] for m in history.query_metrics]))
    per_step = torch.cat(losses, dim=1).cpu().double()  # on the CPU first: MPS has no float64
    bound = family.loss.divergence_bound(batch.y_query.cpu().double() if batch.y_query.is_floating_point()
                                         else batch.y_query.cpu())
    stats = summarise(per_step, bound)
    metric_means, metric_cis = {}, {}
    for name, parts in metrics.items():  # the same statistics over the tasks where the metric is finite
        table = torch.cat(parts, dim=1).cpu().double()
        metric_stats = summarise(table, torch.full(table.shape[1:], math.inf, dtype=torch.float64))
        metric_means[name], metric_cis[name] = [s.mean for s in metric_stats], [s.ci95 for s in metric_stats]
    return EvalResult(
        algorithm=algorithm.name, shots=shots, tasks=tasks, query=query,
        inner_lr=algorithm.inner_lr if inner_lr is None else float(inner_lr), loss=family.loss.name,
        steps=list(range(steps + 1)),
        mean=[s.mean for s in stats], ci95=[s.ci95 for s in stats], median=[s.median for s in stats],
        diverged=[s.diverged for s in stats], diverged_rule=family.loss.describe_bound, metrics=metric_means,
        metrics_ci95=metric_cis, split=getattr(cpu_family, "split", ""), ways=getattr(cpu_family, "ways", None),
    )
