"""The outer loop: :class:`MetaLearner` (one step at a time) and :func:`train` (a whole run).

``MetaLearner`` owns everything that changes during meta-training: the meta-parameters, the Adam
optimizer, the task generator and the step counter. ``outer_step()`` samples a meta-batch, takes
one meta-gradient step and (when asked) returns an :class:`OuterMetrics` of plain CPU numbers.
The explorer calls it once per key press; :func:`train` calls it in a loop, logs metrics, saves
checkpoints atomically and stops cleanly on request, on Ctrl-C or when the loss diverges. Both
share the same code, so a run trained headless and one stepped by hand are the same run.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from engine.errors import ConfigError, MamlTuiError, shown
from engine.algorithms import Algorithm, make_algorithm
from engine.config import RunConfig
from engine.model import Model, Params, make_model
from engine.tasks import TaskBatch, TaskFamily, make_task_family


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be available."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {shown(name)}; use auto, cpu, cuda, cuda:N or mps") from None
    if resolved.type not in ("cpu", "cuda", "mps"):  # meta, xla, xpu, ...: not devices the engine runs on
        raise ConfigError(f"--device {name} is not one the engine runs on; use auto, cpu, cuda, cuda:N or mps")
    if resolved.type == "cpu" and resolved.index not in (None, 0):
        raise ConfigError(f"--device {name} does not exist; the CPU is cpu")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but this torch build sees no CUDA device")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name} was asked for but only {torch.cuda.device_count()} CUDA device(s) are visible")
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for but MPS is not available here")
    return resolved


MAX_THREADS = 1_024  # torch's thread pools crash (segfault) when asked for millions of threads


def resolve_threads(threads: int | None, device: torch.device, config: RunConfig) -> int:
    """CPU threads for torch. Small meta-batches run fastest on ONE thread: each op is a few
    microseconds of work and splitting it costs more than it saves (measured: 1 thread is up to
    3x faster than 2 on the default workload). Bigger workloads get every core."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise ConfigError(f"--threads must be between 1 and {MAX_THREADS:,}, got {shown(threads)}")
        return threads
    if device.type != "cpu":
        return 1
    width = max(config.model.hidden, default=1)
    points = config.train.meta_batch_size * (config.train.shots + config.train.query)
    return 1 if width * width * points < 20_000_000 else (os.cpu_count() or 1)


@dataclass(frozen=True)
class OuterMetrics:
    """One outer step's numbers, all plain Python floats (safe to send to a UI or a file)."""

    step: int  # outer steps done after this one
    query_loss_after: float  # mean query loss after the inner loop's last step
    query_loss_before: float  # mean query loss at theta, before adaptation
    support_loss: float  # mean support loss at theta
    meta_grad_norm: float  # L2 norm of the whole meta-gradient
    layer_grad_norms: dict[str, float] = field(default_factory=dict)  # per layer ("layer0", "lr.layer0", ...)
    inner_grad_norms: list[float] = field(default_factory=list)  # per inner step, mean over tasks
    learned: dict[str, float] = field(default_factory=dict)  # the algorithm's learned numbers (rates, lambda, ...)
    outer_lr: float = 0.0  # the outer rate in force at this step
    backend: str = ""  # which backend computed the meta-gradient
    val_accuracy: float | None = None  # classification: accuracy on the fixed meta-validation episodes
    diagnostics: dict[str, float] = field(default_factory=dict)  # the algorithm's own numbers (iMAML's CG residual)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.query_loss_after, self.query_loss_before, self.meta_grad_norm))


class DivergedError(MamlTuiError, RuntimeError):
    """The loss or the meta-gradient became NaN or infinite (or exploded past a bound)."""


EXPLODED = 1e8  # a loss above this on regression targets of scale ~5 means the run is lost


class MetaLearner:
    """The steppable meta-training state: params, optimizer, generator and step counter."""

    def __init__(self, config: RunConfig, device: str | torch.device = "auto", threads: int | None = None,
                 backend: str = "auto"):
        self.config = config = config.validate().resolved()
        self.device = resolve_device(device)
        self.threads = resolve_threads(threads, self.device, config)
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        self.family: TaskFamily = make_task_family(config.task.name, device=self.device, **config.task.ranges)
        if hasattr(self.family, "check_episode"):  # classification: every split must hold a whole episode
            self.family.check_episode(config.train.shots, config.train.query)
        body = make_model(config.model, self.family.input_dim, self.family.output_dim, getattr(self.family, "input_shape", None))
        self.algorithm: Algorithm = make_algorithm(config.algo.name, body, config.algo.inner_lr, config.algo.inner_steps,
                                                   backend=backend, loss=self.family.loss, options=config.algo.options)
        self.algorithm.prepare(self.family)
        self.model: Model = self.algorithm.model  # what the inner loop runs (CAVIA's has a context input)
        self.generator = torch.Generator(device=self.device).manual_seed(config.train.seed)
        self.params: Params = {n: v.requires_grad_() for n, v in self.algorithm.init(self.generator).items()}
        self._optimizer: torch.optim.Optimizer | None = None  # made on first use (see ``optimizer``)
        self._optimizer_state: dict | None = None  # a checkpoint's, held until then
        self.buffers: dict[str, torch.Tensor] = {}  # algorithm state that is not a parameter (checkpointed)
        self.step = 0
        if backend != "auto":  # asked for by name: refuse now, before a run directory is made
            choice = self.algorithm.backend_choice(config.train.shots)
            if choice.startswith("refused"):
                raise ConfigError(choice[len("refused ("):-1])

    @classmethod
    def from_run(cls, path: str | Path, device: str | torch.device = "auto", threads: int | None = None) -> "MetaLearner":
        """A learner restored from a run directory (or checkpoint file), ready to step or evaluate."""
        from engine.checkpoint import load_run

        from engine.checkpoint import RunError

        target = resolve_device(device)
        config, state = load_run(path, target)
        learner = cls(config, target, threads)
        try:
            learner.load_state_dict(state)
        except RunError:
            raise
        except ValueError as error:  # the checkpoint does not fit the model its config describes
            raise RunError(f"the checkpoint in {path} cannot be used: {error}") from None
        return learner

    def sample_batch(self) -> TaskBatch:
        train = self.config.train
        return self.family.sample(train.meta_batch_size, train.shots, train.query, self.generator)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The outer Adam, made on first use: creating a torch optimizer imports torch._dynamo,
        two of the three seconds it takes to open a run, which the explorer need not wait for."""
        if self._optimizer is None:
            # fused Adam: one kernel for all tensors (3x faster than the for-loop Adam on this workload)
            fused = self.device.type in ("cpu", "cuda")
            scales = self.algorithm.outer_lr_scales()
            groups: dict[float, list[torch.Tensor]] = {}
            for name, value in self.params.items():
                groups.setdefault(float(scales.get(name, 1.0)), []).append(value)
            rate = self.config.train.outer_lr
            self._optimizer = torch.optim.Adam([{"params": values, "lr": rate * scale, "scale": scale}
                                                for scale, values in groups.items()], lr=rate, fused=fused)
            if self._optimizer_state is not None:
                self._load_optimizer(self._optimizer_state)
                self._optimizer_state = None
        return self._optimizer

    def _load_optimizer(self, state: dict) -> None:
        """Take a checkpoint's Adam moments (checked by :meth:`check_state`) and nothing else: the
        hyperparameters (rates, betas, eps, the fused flag) are this learner's own, from its config,
        so no value of the file can reach the optimizer's kernel but three tensors per parameter."""
        own = self._optimizer.state_dict()
        own["state"] = {int(index): {"step": torch.tensor(_count(entry["step"]), dtype=torch.float32),
                                     "exp_avg": entry["exp_avg"].detach().clone(),
                                     "exp_avg_sq": entry["exp_avg_sq"].detach().clone()}
                        for index, entry in state["state"].items()}
        self._optimizer.load_state_dict(own)

    @property
    def progress(self) -> float:
        """How far through its configured steps the run is, 0..1 (what MAML++'s schedules follow)."""
        total = self.config.train.steps
        return min(self.step / total, 1.0) if total > 0 else 1.0

    def outer_step(self, metrics: bool = True, batch: TaskBatch | None = None) -> OuterMetrics | None:
        """One meta-update on a fresh meta-batch; metrics (plain floats) when ``metrics``."""
        batch = self.sample_batch() if batch is None else batch
        progress = self.progress
        result = self.algorithm.meta_step(self.params, batch, metrics=metrics, progress=progress)
        if self.algorithm.trainable:
            self.algorithm.outer_update(self, result.grads, progress)
        self.step += 1
        if not metrics:
            return None
        return self._metrics(result)

    def adam_step(self, grads: Params, lr: float) -> None:
        """One step of the outer Adam at rate ``lr`` (parameters without a gradient stay put)."""
        for group in self.optimizer.param_groups:
            if group["lr"] != lr * group["scale"]:
                group["lr"] = lr * group["scale"]
        for name, value in self.params.items():
            value.grad = grads.get(name)
        self.optimizer.step()

    def _metrics(self, result) -> OuterMetrics:
        with torch.no_grad():
            layers: dict[str, list[torch.Tensor]] = {}
            for name, grad in result.grads.items():
                layers.setdefault(name.rsplit(".", 1)[0], []).append(grad.pow(2).sum())
            layer_norms = {layer: torch.stack(parts).sum().sqrt() for layer, parts in layers.items()}
            total = torch.stack(list(layer_norms.values())).pow(2).sum().sqrt()
            # one device-to-host transfer for everything (in float32: MPS has no float64)
            scalars = [result.query_loss_after, result.query_loss_before, result.support_loss, total, *layer_norms.values(),
                       *result.inner_grad_norms]
            values = torch.stack([s.detach().float().reshape(()) for s in scalars]).tolist()
            learned = {name: float(value) if not isinstance(value, torch.Tensor) else float(value.detach().cpu().double().mean())
                       for name, value in self.algorithm.learned_values(self.params, self).items()}
            diagnostics = {name: float(value.detach().double().mean()) for name, value in result.diagnostics.items()}
        n_layers, n_inner = len(layer_norms), len(result.inner_grad_norms)
        return OuterMetrics(
            step=self.step,
            query_loss_after=values[0],
            query_loss_before=values[1],
            support_loss=values[2],
            meta_grad_norm=values[3],
            layer_grad_norms=dict(zip(layer_norms, values[4:4 + n_layers])),
            inner_grad_norms=values[4 + n_layers:4 + n_layers + n_inner],
            learned=learned,
            outer_lr=float(self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0]["scale"]),
            backend=result.backend,
            diagnostics=diagnostics,
        )

    # -- state ----------------------------------------------------------------------------------
    def parameters(self) -> Params:
        """Detached meta-parameters (on the learner's device)."""
        return {n: v.detach() for n, v in self.params.items()}

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "params": {n: v.detach().clone() for n, v in self.params.items()},
            # fused Adam updates its state in place; an optimizer not made yet has only a checkpoint's
            "optimizer": copy.deepcopy(self._optimizer.state_dict() if self._optimizer is not None
                                       else self._optimizer_state or {}),
            "rng": {"tasks": self.generator.get_state(), "device": self.device.type},
            "buffers": {n: v.detach().clone() for n, v in self.buffers.items()},
        }

    def _optimizer_order(self) -> list[torch.Tensor]:
        """The parameters in the order the outer Adam numbers them (grouped by outer-rate scale)."""
        scales = self.algorithm.outer_lr_scales()
        groups: dict[float, list[torch.Tensor]] = {}
        for name, value in self.params.items():
            groups.setdefault(float(scales.get(name, 1.0)), []).append(value)
        return [value for values in groups.values() for value in values]

    def check_state(self, state: dict) -> None:
        """Refuse a state (a checkpoint's) that does not fit this learner, before any of it is used:
        one sentence naming the first thing wrong. What torch's loaders do not check (Adam moments of
        the wrong shape corrupt memory in the fused kernel) is checked here."""
        if not isinstance(state, dict):
            raise ConfigError("the state is not a mapping")
        step = state.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
            raise ConfigError(f"its step {shown(step)} is not a whole number between 0 and {MAX_STEP:,}")
        params = state.get("params")
        if not isinstance(params, dict):
            raise ConfigError("its parameters are not a mapping of names to tensors")
        for name, value in params.items():
            if not torch.is_tensor(value) or not value.is_floating_point():
                raise ConfigError(f"parameter {name} is not a real floating-point tensor")
            if not torch.isfinite(value).all():
                raise ConfigError(f"parameter {name} is not finite")
        optimizer = state.get("optimizer") or {}
        if optimizer:
            if not isinstance(optimizer, dict) or not isinstance(optimizer.get("state"), dict) or not isinstance(optimizer.get("param_groups"), list):
                raise ConfigError("its optimizer state is not an Adam state (state and param_groups)")
            order = self._optimizer_order()
            groups = optimizer["param_groups"]
            if not all(isinstance(g, dict) and isinstance(g.get("params"), list) and all(type(i) is int for i in g["params"])
                       for g in groups):
                raise ConfigError("its optimizer's parameter groups are not lists of parameter numbers")
            numbers = sorted(i for g in groups for i in g["params"])
            if numbers != list(range(len(order))):
                raise ConfigError(f"its optimizer state covers {len(numbers)} parameters; this model has {len(order)}")
            for group in groups:  # not used (the learner's own rates are), but a file with these is not sane
                betas = group.get("betas", (0.9, 0.999))
                if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                        and all(type(b) in (int, float) and 0 <= b < 1 for b in betas)):
                    raise ConfigError(f"its optimizer's betas {shown(betas)} are not two numbers in [0, 1)")
                for key in ("lr", "eps", "weight_decay"):
                    if key in group and not (type(group[key]) in (int, float) and math.isfinite(group[key]) and group[key] >= 0):
                        raise ConfigError(f"its optimizer's {key} {shown(group[key])} is not a finite non-negative number")
            for index, entry in optimizer["state"].items():
                if not isinstance(index, int) or not 0 <= index < len(order) or not isinstance(entry, dict):
                    raise ConfigError(f"its optimizer state has an entry {shown(index)} for no parameter")
                for key in ("exp_avg", "exp_avg_sq"):
                    moment = entry.get(key)
                    if not torch.is_tensor(moment) or not moment.is_floating_point() or tuple(moment.shape) != tuple(order[index].shape):
                        raise ConfigError(f"its optimizer's {key} for parameter {index} is not a real tensor of shape {tuple(order[index].shape)}")
                    if not torch.isfinite(moment).all() or (key == "exp_avg_sq" and (moment < 0).any()):
                        raise ConfigError(f"its optimizer's {key} for parameter {index} is not finite (or is negative)")
                if _count(entry.get("step")) is None:
                    raise ConfigError(f"its optimizer's step count for parameter {index} is not a whole number "
                                      f"between 0 and {MAX_STEP:,}")
        rng = state.get("rng") or {}
        if not isinstance(rng, dict):
            raise ConfigError("its random-number state is not a mapping")
        if "tasks" in rng and rng.get("device") == self.device.type:
            tasks = rng["tasks"]
            expected = self.generator.get_state()
            if not torch.is_tensor(tasks) or tasks.dtype != torch.uint8 or tasks.shape != expected.shape:
                raise ConfigError(f"its random-number state is not a byte tensor of {expected.numel()} entries")
        buffers = state.get("buffers") or {}
        if not isinstance(buffers, dict):
            raise ConfigError("its algorithm buffers are not a mapping")
        for name, value in buffers.items():
            if not torch.is_tensor(value) or not value.is_floating_point() or not torch.isfinite(value).all():
                raise ConfigError(f"its algorithm buffer {name} is not a finite real tensor")

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        missing = set(self.params) - set(state["params"])
        if missing:
            raise ConfigError(f"the checkpoint lacks parameters {sorted(missing)}; it was made for another model or algorithm")
        with torch.no_grad():
            for name, value in self.params.items():
                source = state["params"][name]
                if tuple(source.shape) != tuple(value.shape):
                    raise ConfigError(f"parameter {name} has shape {tuple(source.shape)} in the checkpoint but {tuple(value.shape)} in this model")
                value.copy_(source.to(value.device))
        if state.get("optimizer"):
            if self._optimizer is not None:
                self._load_optimizer(state["optimizer"])
            else:
                self._optimizer_state = state["optimizer"]
        rng = state.get("rng", {})
        if rng.get("device") == self.device.type and "tasks" in rng:
            self.generator.set_state(rng["tasks"].cpu())
        else:  # another device: its generator state does not transfer; reseed deterministically
            self.generator.manual_seed(self.config.train.seed + int(state["step"]))
        # scalars stay on the CPU (reading them needs no device sync, and float64 works on every device)
        self.buffers = {n: v if v.dim() == 0 else v.to(self.device) for n, v in (state.get("buffers") or {}).items()}
        self.step = int(state["step"])


MAX_STEP = 10**12  # beyond any real run (30 years at a thousand meta-it/s); a bigger count is a corrupt file


def _count(value) -> float | None:
    """An Adam step count (a number or a one-element real tensor) as a float, None when it is not a
    whole number in 0..MAX_STEP."""
    if torch.is_tensor(value):
        if value.numel() != 1 or value.is_complex():
            return None
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if 0 <= value <= MAX_STEP and float(value).is_integer() else None


class Probe:
    """A fixed meta-batch, drawn once from its own stream (training's is untouched), on which every
    checkpoint about to be written is measured: the query loss after the algorithm's inner steps.
    A state whose loss is not finite, has exploded, or has grown far beyond the run's start (more
    than ``GROWTH`` times, and by more than ``MARGIN``) is not kept."""

    GROWTH = 20.0
    MARGIN = 1.0
    TASKS = 25

    def __init__(self, learner: "MetaLearner"):
        train = learner.config.train
        generator = torch.Generator(device=learner.device).manual_seed(7_919 + train.seed)
        self.batch = learner.family.sample(self.TASKS, train.shots, train.query, generator)
        self.start = self.losses(learner)[1]

    def losses(self, learner: "MetaLearner") -> tuple[float, float]:
        """The probe's mean query loss at theta and after the algorithm's inner steps."""
        batch = self.batch
        history = learner.algorithm.adapt(learner.parameters(), batch.x_support, batch.y_support, None,
                                          batch.x_query, batch.y_query, keep_params=False)
        return float(history.query_loss[0].mean()), float(history.query_loss[-1].mean())

    def check(self, learner: "MetaLearner") -> str:
        """"" when the learner's state may be kept, else why not (part of a sentence)."""
        before, value = self.losses(learner)
        if not math.isfinite(value) or value > EXPLODED:
            return f"the adapted query loss on a fixed probe meta-batch is {value:.3g}"
        if math.isfinite(self.start) and value > self.GROWTH * self.start and value - self.start > self.MARGIN:
            return (f"the adapted query loss on a fixed probe meta-batch grew from {self.start:.3g} at the start "
                    f"to {value:.3g} (over {self.GROWTH:g} times)")
        if learner.step > 0 and value > self.GROWTH * before and value - before > self.MARGIN:
            return (f"adapting makes the query loss on a fixed probe meta-batch over {self.GROWTH:g} times worse "
                    f"({before:.3g} at theta, {value:.3g} after the inner steps): the inner learning rate "
                    f"{learner.config.algo.inner_lr:g} is likely too large")
        return ""


class Validation:
    """Classification runs: a fixed set of meta-validation episodes (classes never trained on), drawn
    once from their own stream, on which every logged step measures the query accuracy after the
    algorithm's inner steps; the best such state is kept as ``best.pt``."""

    EPISODES = 100
    CHUNK = 25  # episodes adapted at once (a conv net's episodes hold whole images)

    def __init__(self, learner: "MetaLearner"):
        train = learner.config.train
        generator = torch.Generator(device=learner.device).manual_seed(104_729 + train.seed)
        self.batch = learner.family.with_split("val").sample(self.EPISODES, train.shots, train.query, generator)

    @staticmethod
    def wanted(learner: "MetaLearner") -> bool:
        return hasattr(learner.family, "with_split")

    def accuracy(self, learner: "MetaLearner") -> float:
        batch, params, hits = self.batch, learner.parameters(), []
        for start in range(0, batch.num_tasks, self.CHUNK):
            sl = slice(start, start + self.CHUNK)
            history = learner.algorithm.adapt(params, batch.x_support[sl], batch.y_support[sl], None,
                                              batch.x_query[sl], batch.y_query[sl], keep_params=False)
            hits.append(history.query_metrics[-1]["accuracy"])
        return float(torch.cat(hits).double().mean())


BEST_CHECKPOINT, BEST_MARKER = "best.pt", "best.json"


def _best_so_far(run) -> float:
    """The meta-validation accuracy of the run's best.pt (from best.json), or -1 when there is none."""
    try:
        marker = json.loads((run.path / BEST_MARKER).read_text())
        value = marker.get("val_accuracy") if isinstance(marker, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and (run.path / BEST_CHECKPOINT).is_file():
            return float(value)
    except (OSError, ValueError, RecursionError):
        pass
    return -1.0


# -- the headless run ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainEvent:
    """What :func:`train` reports through its callback."""

    kind: str  # "start", "log", "checkpoint", "note" (a remark for the user), "end"
    step: int
    total: int
    metrics: OuterMetrics | None = None
    its_per_second: float = 0.0
    message: str = ""


def train(
    config: RunConfig,
    run_dir: str | Path,
    device: str = "auto",
    threads: int | None = None,
    resume: bool = False,
    steps: int | None = None,
    on_event: Callable[[TrainEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    backend: str = "auto",
) -> TrainEvent:
    """Train (or resume) a run directory up to ``steps`` total outer steps (default: the config's).

    Returns the final event; its ``kind`` is "end" and ``message`` says why it stopped:
    "finished", "interrupted" (Ctrl-C or ``should_stop``) or "diverged: ..." (a
    :class:`DivergedError` is raised after the event is sent, the last good checkpoint intact).
    """
    from engine import checkpoint

    emit = on_event or (lambda event: None)
    run = checkpoint.RunDirectory(run_dir)
    if not resume:
        run.check_creatable()  # before the lock makes the directory
    elif not run.config_path.is_file():
        run.load_config()  # says why it is not a run, before the lock would make the directory
    lock = checkpoint.RunLock(run.path, "maml-tui train").acquire()  # one writer, for the whole run
    try:
        return _train_locked(config, run, device, threads, resume, steps, emit, should_stop, backend, checkpoint)
    finally:
        lock.release()


def _train_locked(config, run, device, threads, resume, steps, emit, should_stop, backend, checkpoint) -> "TrainEvent":
    if resume:
        stored = run.load_config()
        config = stored if steps is None else stored.replace(train={"steps": steps})
        learner = MetaLearner(config, device, threads, backend)
        try:
            learner.load_state_dict(run.load_checkpoint(map_location=learner.device))
        except checkpoint.RunError:
            raise
        except ValueError as error:  # the checkpoint does not fit the model its config describes
            raise checkpoint.RunError(f"the checkpoint in {run.path} cannot be used: {error}") from None
        if steps is not None and steps <= learner.step:  # refused before any file is touched
            raise checkpoint.RunError(
                f"{run.path} is already at outer step {learner.step:,}, so --steps {steps:,} asks for nothing; give a "
                f"target beyond it, or resume without --steps to finish its own target ({stored.train.steps:,})")
        dropped = run.truncate_metrics(learner.step)
        if dropped:
            emit(TrainEvent("note", learner.step, config.train.steps,
                            message=f"{run.metrics_path}: dropped {dropped} line{'s' * (dropped != 1)} that "
                                    "were not records (cut short by a crash or a full disk, or edited)"))
        if steps is not None:
            run.write_config(config)  # the new target survives a later plain --resume
    else:
        config = config if steps is None else config.replace(train={"steps": steps})
        learner = MetaLearner(config, device, threads, backend)
        config = learner.config  # the algorithm's defaults filled in: what the run directory records
        run.create(config)
    total = config.train.steps
    emit(TrainEvent("start", learner.step, total, message=str(run.path)))
    probe = Probe(learner)
    kept = {"step": learner.step if resume else None}

    def save(reason: str) -> None:
        if not _params_finite(learner):  # never overwrite the last good checkpoint with NaNs
            message = f"diverged before step {learner.step}: the parameters are not finite; the last good checkpoint is kept"
            emit(TrainEvent("end", learner.step, total, message=message))
            raise DivergedError(message)
        # every save, not only the logging steps: the state about to be kept must still adapt sanely
        problem = probe.check(learner) if learner.algorithm.trainable and reason != "initial" else ""
        if problem:
            where = f"step {kept['step']:,}" if kept["step"] is not None else "none"
            message = f"diverged by step {learner.step:,}: {problem}; the last good checkpoint ({where}) is kept"
            emit(TrainEvent("end", learner.step, total, message=message))
            raise DivergedError(message)
        run.save_checkpoint(learner.state_dict(), config)
        kept["step"] = learner.step
        emit(TrainEvent("checkpoint", learner.step, total, message=reason))

    if not learner.algorithm.trainable:
        save("nothing to train")
        end = TrainEvent("end", learner.step, total, message=f"{config.algo.name} has nothing to meta-train; saved its initialisation")
        emit(end)
        return end

    validation = Validation(learner) if Validation.wanted(learner) else None
    best = {"value": _best_so_far(run) if resume else -1.0}

    def validate(metrics: OuterMetrics) -> OuterMetrics:
        """The meta-validation accuracy of this state, kept as best.pt when it is the best yet."""
        if validation is None:
            return metrics
        value = validation.accuracy(learner)
        if value > best["value"] and _params_finite(learner):
            checkpoint.save_checkpoint(run.path / BEST_CHECKPOINT, learner.state_dict(), config)
            checkpoint._atomic_write(run.path / BEST_MARKER, lambda f: f.write(json.dumps(
                {"step": learner.step, "val_accuracy": value, "episodes": Validation.EPISODES}).encode()))
            best["value"] = value
        return dataclasses.replace(metrics, val_accuracy=value)

    if not resume:
        save("initial")
    interrupted = _InterruptFlag()  # Ctrl-C stops at a step boundary, so the checkpoint is exact
    try:
        reason, its = _train_loop(learner, run, total, interrupted, should_stop, emit, save, validate)
        interrupted.saving = True  # from here on Ctrl-C is ignored: the final save is not cut short
        save("final" if reason == "finished" else "interrupted")
    finally:
        interrupted.restore()
    _write_preview(run.path)
    end = TrainEvent("end", learner.step, total, its_per_second=its, message=reason)
    emit(end)
    return end


def _write_preview(path: Path) -> None:
    """What the explorer will show when it opens this run, so it can draw it before torch is up."""
    from engine.explorer import write_preview  # the explorer is built on this module

    try:
        write_preview(path, "cpu")
    except (OSError, ValueError, RuntimeError):  # a convenience: never fails a finished run
        pass


def _train_loop(learner: MetaLearner, run, total: int, interrupted, should_stop, emit, save, validate=None) -> tuple[str, float]:
    """Outer steps until ``total``, a stop request or Ctrl-C; returns why it stopped and the last meta-it/s."""
    log_every, checkpoint_every = learner.config.train.log_every, learner.config.train.checkpoint_every
    window_start, window_steps = time.perf_counter(), 0
    reason, its = "finished", 0.0
    try:
        while learner.step < total:
            if interrupted.set or (should_stop is not None and should_stop()):
                reason = "interrupted"
                break
            log_now = (learner.step + 1) % log_every == 0 or learner.step + 1 == total
            metrics = learner.outer_step(metrics=log_now)
            window_steps += 1
            if metrics is not None:
                elapsed = time.perf_counter() - window_start
                its = window_steps / elapsed if elapsed > 0 else 0.0
                window_start, window_steps = time.perf_counter(), 0
                if not metrics.finite or metrics.query_loss_after > EXPLODED:
                    message = (f"diverged at step {learner.step}: query loss {metrics.query_loss_after:.3g}, "
                               f"meta-gradient norm {metrics.meta_grad_norm:.3g}; the last good checkpoint is kept")
                    end = TrainEvent("end", learner.step, total, metrics, its, message=message)
                    emit(end)
                    raise DivergedError(message)
                if validate is not None:
                    metrics = validate(metrics)
                    window_start = time.perf_counter()  # the speed is training's own, without the validation
                run.append_metrics(metrics, its)
                emit(TrainEvent("log", learner.step, total, metrics, its))
            if learner.step % checkpoint_every == 0 and learner.step < total:
                save("periodic")
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread's handler
        reason = "interrupted"
    return reason, its


class _InterruptFlag:
    """While training, the first SIGINT only raises a flag; a second one interrupts at once."""

    def __init__(self):
        self.set = False
        self.saving = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.saving:
            return
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _params_finite(learner: MetaLearner) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in learner.params.values())
