"""Meta-iterations per second: the engine against the plain per-task loop, in one run, per backend.

The plain loop is the tutorial implementation every MAML course starts from: a Python loop over
the meta-batch, ``torch.autograd.grad(..., create_graph=True)`` per task, the adapted parameters
as a list, one ``backward`` on the summed query losses. The engine runs the same workload (same
model, batch sizes, optimizer and sampling) through :class:`engine.trainer.MetaLearner`, once
with the backend ``auto`` picks and once forced onto each backend that accepts the case, so every
fast path shows what it earns over the general ``torch.func`` path. All include task sampling and
the Adam step, so the ratio is what a user sees in ``maml-tui train``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as nnf

from engine.config import AlgoConfig, RunConfig, TrainConfig
from engine.model import MLP
from engine.tasks import make_task_family


@dataclass(frozen=True)
class BenchCase:
    label: str
    first_order: bool
    inner_steps: int


CASES = (
    BenchCase("second-order, 1 step", False, 1),
    BenchCase("first-order, 1 step", True, 1),
    BenchCase("second-order, 5 steps", False, 5),
)


@dataclass(frozen=True)
class BenchResult:
    label: str
    engine_its: float  # meta-iterations per second, with the backend auto picks
    loop_its: float  # the plain loop at its best thread count
    engine_threads: int
    loop_threads: int
    loop_threads_tried: tuple[int, ...]
    backend: str = ""  # the one auto picks
    backends: dict = None  # meta-it/s forced onto each backend that accepts the case

    @property
    def ratio(self) -> float:
        return self.engine_its / self.loop_its

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def plain_loop_step(model: MLP, params: list[torch.Tensor], optimizer, batch, inner_lr: float, inner_steps: int, first_order: bool) -> torch.Tensor:
    """One meta-iteration the tutorial way: a Python loop over tasks. Returns the mean query loss
    as a tensor (no per-task device sync, which would slow the loop down on a GPU)."""
    optimizer.zero_grad()
    total = 0.0
    names = model.names
    for t in range(batch.num_tasks):
        fast = params
        for _ in range(inner_steps):
            prediction = model.forward(dict(zip(names, fast)), batch.x_support[t])
            loss = nnf.mse_loss(prediction, batch.y_support[t])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [p - inner_lr * g for p, g in zip(fast, grads)]
        query = nnf.mse_loss(model.forward(dict(zip(names, fast)), batch.x_query[t]), batch.y_query[t])
        (query / batch.num_tasks).backward()
        total = total + query.detach()
    optimizer.step()
    return total / batch.num_tasks


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _time(step, seconds: float, device: str = "cpu") -> float:
    for _ in range(3):
        step()  # warm-up
    _sync(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    _sync(device)  # GPU work is asynchronous: count it before stopping the clock
    return count / (time.perf_counter() - start)


def run_benchmark(seconds: float = 3.0, device: str = "cpu", meta_batch_size: int = 25, shots: int = 10, query: int = 10, cases=CASES) -> list[BenchResult]:
    """Time the engine and the plain loop on each case for ``seconds`` each.

    The engine runs with its own thread choice; the plain loop is timed with one thread and with
    torch's default and credited with the faster, so the ratio never flatters the engine.
    """
    from engine import backends as engine_backends
    from engine.trainer import MetaLearner  # local import: the trainer is the thing measured

    default_threads = torch.get_num_threads()
    thread_counts = tuple(sorted({1, default_threads})) if str(device).startswith("cpu") else (default_threads,)
    results = []
    try:
        for case in cases:
            algo = "fomaml" if case.first_order else "maml"
            config = RunConfig(
                algo=AlgoConfig(name=algo, inner_steps=case.inner_steps),
                train=TrainConfig(meta_batch_size=meta_batch_size, shots=shots, query=query, log_every=10**9),
            )
            learner = MetaLearner(config, device=device)
            engine_threads = torch.get_num_threads()
            engine_its = _time(lambda: learner.outer_step(metrics=False), seconds, device)
            chosen = learner.algorithm.backend_choice(shots)
            per_backend = {}
            for name, backend in engine_backends.BACKENDS.items():
                loop = learner.algorithm.inner_loop(learner.params)
                if backend.refuses(learner.model, learner.algorithm.loss, loop) is not None:
                    continue
                forced = MetaLearner(config, device=device, backend=name)
                per_backend[name] = _time(lambda: forced.outer_step(metrics=False), seconds, device)

            best_its, best_threads = 0.0, thread_counts[0]
            for threads in thread_counts:
                torch.set_num_threads(threads)
                generator = torch.Generator(device=device).manual_seed(0)
                model = MLP()
                family = make_task_family("sinusoid", device=device)
                params = [p.requires_grad_() for p in model.init(generator).values()]
                optimizer = torch.optim.Adam(params, lr=1e-3)

                def loop_step():
                    batch = family.sample(meta_batch_size, shots, query, generator)
                    plain_loop_step(model, params, optimizer, batch, learner.algorithm.inner_lr, case.inner_steps, case.first_order)

                its = _time(loop_step, seconds, device)
                if its > best_its:
                    best_its, best_threads = its, threads
            results.append(BenchResult(case.label, engine_its, best_its, engine_threads, best_threads, thread_counts,
                                       chosen, per_backend))
    finally:
        torch.set_num_threads(default_threads)
    return results
