"""The steppable object the explorer drives: one current task, its inner loop, and the outer loop.

:class:`ExplorerSession` wraps a :class:`~engine.trainer.MetaLearner` and adds what a person
looking at one task needs: the current task (drawn from its own seeded generator, with its support
and query points and a dense grid for plotting), how many inner steps have been taken on it, the
query loss across inner steps 0..S (the curve that shows MAML keeps improving past its training
step count), and optional companions trained side by side on the same meta-batches (a second
algorithm to compare, and the pretrained baseline). Everything it hands out is a frozen
:class:`ExplorerSnapshot` or :class:`OuterRecord` of plain Python floats, never live tensors, so
it can cross a process boundary or reach a UI as it is. A diverging outer loop restores the last
finite state and raises :class:`~engine.trainer.DivergedError`.

On a classification family the task is an N-way K-shot episode: the snapshot's curve fields are
empty and its ``classification`` entry holds the episode instead (support and a few query images
as rows of grey values, the query images' class probabilities after each inner step taken, and the
accuracy on the whole query set per inner step); the loss is the cross-entropy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine import registry
from engine.checkpoint import RunDirectory, RunLock
from engine.config import AlgoConfig, RunConfig
from engine.errors import ConfigError
from engine.tasks import TaskBatch
from engine.trainer import EXPLODED, DivergedError, MetaLearner, OuterMetrics

CURVE_STEPS = 10  # the loss-per-inner-step curve always reaches at least this many steps
GRID_POINTS = 121  # x positions of the plotted curves
SETTINGS = ("task", "algorithm", "hidden", "ways", "shots", "inner_lr", "inner_steps", "meta_batch_size", "seed")
FRESH_SETTINGS = ("algorithm", "hidden", "ways")  # changing these starts a new model (ways: the head's width)
EPISODE_SPLITS = ("train", "test")  # where the explorer's own episodes come from: classes trained on, or unseen ones
# what a switch of task family between regression and classification starts from (digits: 5-way
# 1-shot episodes, adapted at a rate that moves 8x8 images' logits in one step)
FAMILY_DEFAULTS = {"regression": {"shots": 10}, "classification": {"shots": 1, "inner_lr": 0.4}}
SHOWN_QUERIES_PER_CLASS = 2  # query images of each class whose probabilities a classification snapshot carries
SHOWN_PIXELS = 14  # images are sent pooled to at most this many pixels a side (Omniglot's 28 become 14)
RECORDS_KEPT = 4_000  # outer-step records a session holds at most (charts draw a few hundred points)


class RecordLog(list):
    """Outer-step records, at most ``kept`` of them, evenly spread over the whole history.

    Live training records ten steps a second, forever; holding them all grew both explorer
    processes by about 0.3 MiB a minute. When the log is full it keeps every other record and from
    then on takes one record in ``stride`` (doubled each time), so memory stays flat and the charts
    still show the whole run at an even resolution. ``thinned`` says the log was rewritten (the
    interface then needs the whole log again, not just the newest records).
    """

    def __init__(self, records=(), kept: int = RECORDS_KEPT):
        super().__init__(records)
        self.kept, self.stride, self.offered, self.thinned = kept, 1, len(self), False
        self._fit()

    def offer(self, record) -> bool:
        """Keep ``record`` if it falls on the stride; True when it was kept."""
        self.offered += 1
        if self.offered % self.stride:
            return False
        self.append(record)
        self._fit()
        return True

    def _fit(self) -> None:
        while len(self) > self.kept:
            # the log holds the offers numbered k*stride for consecutive k; keep those with k even, so
            # the next kept offer (the next multiple of the doubled stride) continues the even spacing
            first = self.offered // self.stride - len(self) + 1
            self[:] = self[first % 2::2]
            self.stride *= 2
            self.thinned = True


@dataclass(frozen=True)
class OuterRecord:
    """One charted outer step: plain floats (NaN where a number was not recorded)."""

    step: int
    query_loss_before: float  # mean query MSE at theta
    query_loss_after: float  # mean query MSE after adaptation
    meta_grad_norm: float  # L2 norm of the meta-gradient
    inner_grad_norm: float  # mean over inner steps of the support-gradient norm
    learned: dict[str, float] = field(default_factory=dict)  # the algorithm's learned numbers (alpha, beta, ...)

    @classmethod
    def from_metrics(cls, metrics: OuterMetrics | dict) -> "OuterRecord":
        data = metrics.to_dict() if isinstance(metrics, OuterMetrics) else metrics
        inner = [float(v) for v in data.get("inner_grad_norms") or []]
        return cls(
            step=int(data["step"]),
            query_loss_before=float(data.get("query_loss_before", math.nan)),
            query_loss_after=float(data.get("query_loss_after", math.nan)),
            meta_grad_norm=float(data.get("meta_grad_norm", math.nan)),
            inner_grad_norm=sum(inner) / len(inner) if inner else math.nan,
            learned={str(k): float(v) for k, v in (data.get("learned") or {}).items()},
        )


@dataclass(frozen=True)
class CompanionSnapshot:
    """A second learner on the same task: its prediction after the same inner steps, and its curve."""

    role: str  # "compare" or "baseline"
    algorithm: str
    step: int
    prediction: tuple[float, ...]  # on ExplorerSnapshot.grid_x after inner_steps_taken steps
    curve: tuple[float, ...]  # query loss after 0..S inner steps
    accuracy: tuple[float, ...] = ()  # classification: query accuracy after 0..S inner steps


@dataclass(frozen=True)
class BatchTask:
    """One task of the meta-batch, for the small multiples: theta's fit and the adapted one."""

    task_params: dict[str, float]
    support_x: tuple[float, ...]
    support_y: tuple[float, ...]
    truth: tuple[float, ...]  # on the snapshot's grid_x
    before: tuple[float, ...]  # theta's prediction
    after: tuple[float, ...]  # after the training's inner steps on this task's support set
    loss_before: float  # query MSE
    loss_after: float


@dataclass(frozen=True)
class ExplorerSnapshot:
    """Everything the explorer draws, as plain numbers."""

    step: int  # outer steps taken by the main learner
    settings: dict[str, Any]  # the SETTINGS values in force
    source: str  # where the main learner came from ("new model", a run directory, ...)
    task_number: int  # increases with every new task
    task_params: dict[str, float]  # e.g. amplitude and phase of the current sinusoid
    grid_x: tuple[float, ...]
    truth: tuple[float, ...]  # the true function on grid_x
    support_x: tuple[float, ...]
    support_y: tuple[float, ...]
    query_x: tuple[float, ...]
    query_y: tuple[float, ...]
    inner_steps_taken: int
    predictions: tuple[tuple[float, ...], ...]  # index s: prediction after s inner steps (0 = theta)
    support_loss: tuple[float, ...]  # after 0..inner_steps_taken steps
    query_loss: tuple[float, ...]  # after 0..inner_steps_taken steps
    curve: tuple[float, ...]  # query loss after 0..max(CURVE_STEPS, taken) inner steps
    inner_lr: float  # the inner learning rate the explorer's steps use
    companions: tuple[CompanionSnapshot, ...] = field(default_factory=tuple)
    algorithm_view: tuple[dict, ...] = field(default_factory=tuple)  # the algorithm's own state, as small tables
    fresh_settings: tuple[str, ...] = FRESH_SETTINGS  # changing one of these starts a new model
    unsaved_steps: int = 0  # outer steps trained since the model was saved or opened
    batch_tasks: tuple[BatchTask, ...] = field(default_factory=tuple)  # a few tasks of the meta-batch, when asked for
    batch_source: str = ""  # "last" (the meta-batch of the last outer step) or "next" (one like it, before any)
    # classification families only (their grid, truth, points and predictions are empty): the
    # episode's images and what the model makes of them, see ExplorerSession.classification_view
    classification: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins only (what crosses the process boundary)."""
        return asdict(self)


def _floats(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in values.detach().reshape(-1).cpu().tolist())


def settings_of(config: RunConfig) -> dict[str, Any]:
    """The explorer's view of a config: the values a person can pick (``ways`` on classification only)."""
    ways = ({"ways": int(config.task.ranges.get("ways", registry.task_class(config.task.name).defaults["ways"]))}
            if registry.is_classification(config.task.name) else {})
    return {
        "task": config.task.name,
        "algorithm": config.algo.name,
        "hidden": ",".join(str(h) for h in config.model.hidden),
        **ways,
        "shots": config.train.shots,
        "inner_lr": config.algo.inner_lr,
        "inner_steps": config.algo.inner_steps,
        "meta_batch_size": config.train.meta_batch_size,
        "seed": config.train.seed,
    }


def apply_settings(config: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """``config`` with explorer settings changed; raises ValueError with one sentence if invalid."""
    unknown = set(changes) - set(SETTINGS)
    if unknown:
        raise ValueError(f"unknown setting {sorted(unknown)[0]!r}; the explorer has {', '.join(SETTINGS)}")
    task, algo, model, train = {}, {}, {}, {}
    if "task" in changes:
        registry.lookup("task family", registry.TASKS, changes["task"])
        if changes["task"] != config.task.name:
            task = {"name": changes["task"], "ranges": {}}
    if "algorithm" in changes:
        registry.lookup("algorithm", registry.ALGORITHMS, changes["algorithm"])
        if changes["algorithm"] != config.algo.name:  # a new algorithm starts from its own defaults
            algo.update(name=changes["algorithm"], inner_lr=None, inner_steps=None, options={})
    name = changes.get("task", config.task.name)
    classifies = registry.is_classification(name)
    if classifies != registry.is_classification(config.task.name):
        # regression and classification want different shots and inner rates: a switch between them
        # takes the new kind's own (unless this change sets them), so the first inner step shows something
        train["shots"] = FAMILY_DEFAULTS["classification" if classifies else "regression"]["shots"]
        algo.setdefault("inner_lr", None)
        if not classifies and "algorithm" not in changes and registry.ALGORITHMS[config.algo.name].kind == "classification":
            # protonet has no regression to do: back on curves, the explorer's own algorithm takes over
            algo.update(name=AlgoConfig().name, inner_lr=None, inner_steps=None, options={})
    if classifies and "inner_lr" in algo and algo["inner_lr"] is None:
        algo["inner_lr"] = default_rates(name, algo.get("name", config.algo.name))["inner_lr"]
    if "ways" in changes:
        if not classifies:
            raise ValueError(f"ways is the number of classes in a classification episode; the {name} family is regression")
        try:
            ways = int(changes["ways"])
        except (TypeError, ValueError):
            raise ValueError(f"ways must be a whole number, got {changes['ways']!r}") from None
        ranges = dict(config.task.ranges) if not task else {}
        task = {"name": name, "ranges": {**ranges, "ways": ways}}
    if "hidden" in changes:
        text = str(changes["hidden"]).strip()
        model["hidden"] = tuple(int(p) for p in text.split(",")) if text else ()
    for key in ("inner_lr",):
        if key in changes:
            algo[key] = float(changes[key])
    if "inner_steps" in changes:
        algo["inner_steps"] = int(changes["inner_steps"])
    for key in ("shots", "meta_batch_size", "seed"):
        if key in changes:
            train[key] = int(changes[key])
    sections = {name: value for name, value in (("task", task), ("algo", algo), ("model", model), ("train", train)) if value}
    return config.replace(**sections).validate().resolved() if sections else config


def default_rates(task: str, algorithm: str) -> dict[str, Any]:
    """The inner rate and step count the explorer starts ``algorithm`` with on task family ``task``:
    the algorithm's own, except the inner rate on classification families (every algorithm's default
    is tuned for sinusoids: MAML's 0.001 does nothing visible on digits, where 0.4 works)."""
    defaults = registry.algorithm_class(algorithm).defaults
    rates = {"inner_lr": defaults["inner_lr"], "inner_steps": defaults["inner_steps"]}
    if registry.is_classification(task):
        rates["inner_lr"] = FAMILY_DEFAULTS["classification"]["inner_lr"]
    return rates


def companion_config(config: RunConfig, algorithm: str) -> RunConfig:
    """The config of a learner trained beside ``config``'s on the same tasks: same model, data and
    seed; the inner rate and steps are shared when the two algorithms default to the same ones,
    otherwise the companion keeps its own (CAVIA's rate is 1.0, MAML's 0.001)."""
    if algorithm == config.algo.name:
        return config
    own, other = default_rates(config.task.name, config.algo.name), default_rates(config.task.name, algorithm)
    algo = {"name": algorithm, "options": {}}
    for key in ("inner_lr", "inner_steps"):
        algo[key] = getattr(config.algo, key) if own[key] == other[key] else other[key]
    return config.replace(algo=algo).validate()


class ExplorerSession:
    """A meta-learner, the task on screen, and optional companions, stepped one action at a time."""

    def __init__(self, learner: MetaLearner, source: str = "new model", records: list[OuterRecord] | None = None):
        self.learner = learner
        self.source = source
        # the outer step the source run holds on disk (None: nothing of this model is saved anywhere)
        self.saved_step: int | None = learner.step if source != "new model" else None
        self.records = records or []
        self.notes: list[str] = []  # remarks for the user about what was opened (sent once, then cleared)
        self.companions: dict[str, MetaLearner] = {}
        self.last_batch = None  # the meta-batch of the last outer step (for the small multiples)
        self.batch_count = 0  # how many of its tasks each snapshot shows (0: none; the panel is closed)
        self._curve: tuple[tuple, tuple[float, ...]] | None = None  # ((learner, task), curve) of the last full snapshot
        self.inner_steps_taken = 0
        self.task_number = 0
        self.episode_split = "train"  # classification: the explorer's episodes from the meta-train classes, or "test"
        self._split_family: tuple[object, str, object] | None = None  # (training family, split, that split's family)
        self._restore_point: list[dict] | None = None  # state at the last finite check
        self.task_generator = torch.Generator(device=learner.device)
        self._reseed_tasks()
        self.new_task()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path | None = None, device: str = "auto", config: RunConfig | None = None) -> "ExplorerSession":
        """A session on a run directory (or checkpoint file), or a fresh model of ``config`` (default settings)."""
        if path is None:
            return cls(MetaLearner(config or RunConfig(), device), "new model")
        path = Path(path)
        learner = MetaLearner.from_run(path, device)
        notes: list[str] = []
        session = cls(learner, str(path), _read_records(path, notes))
        session.notes = notes
        return session

    @property
    def config(self) -> RunConfig:
        return self.learner.config

    @property
    def records(self) -> RecordLog:
        return self._records

    @records.setter
    def records(self, records) -> None:
        self._records = RecordLog(records)

    @property
    def settings(self) -> dict[str, Any]:
        return settings_of(self.config)

    @property
    def classifies(self) -> bool:
        """Whether the task family is few-shot classification (episodes of images, not curves)."""
        return registry.is_classification(self.config.task.name)

    def _reseed_tasks(self) -> None:
        # the explorer's tasks come from their own stream, so drawing one never shifts training's
        self.task_generator.manual_seed(10_007 + self.config.train.seed)

    def episode_family(self):
        """The family the explorer's own episodes come from: training's, or its meta-test split
        (classes never trained on) after :meth:`set_episode_split`."""
        family = self.learner.family
        if not self.classifies or self.episode_split == family.split:
            return family
        cached = self._split_family
        if cached is None or cached[0] is not family or cached[1] != self.episode_split:
            self._split_family = cached = (family, self.episode_split, family.with_split(self.episode_split))
        return cached[2]

    def set_episode_split(self, split: str) -> None:
        """Draw the explorer's episodes from the meta-train classes (``train``) or the unseen
        meta-test ones (``test``), starting with a new episode; training is untouched."""
        if split not in EPISODE_SPLITS:
            raise ValueError(f"the explorer draws episodes from the {' or '.join(EPISODE_SPLITS)} classes, not {split!r}")
        if not self.classifies:
            raise ValueError("unseen classes are a classification family's; a regression task family draws every task alike")
        if split != self.episode_split:
            self.episode_split = split
            self.new_task()

    # -- the inner loop -------------------------------------------------------------------------
    def new_task(self) -> None:
        """Draw a new task (support and query points) and reset the adaptation."""
        train, family = self.config.train, self.episode_family()
        if self.classifies:  # query images per class: ten where the smallest class has them
            query = max(train.query, min(10, family.smallest_class() - train.shots))
            self.task = family.sample(1, train.shots, query, self.task_generator)
            self.grid = None  # nothing to plot along x
        else:
            self.task = family.sample(1, train.shots, max(train.query, 10), self.task_generator)
            low, high = family.x_range
            self.grid = torch.linspace(low, high, GRID_POINTS, device=self.learner.device).view(1, -1, 1)  # (1, grid, 1)
        self.task_number += 1
        self.inner_steps_taken = 0

    def inner_step(self) -> None:
        """One more inner gradient step on the current task's support set."""
        self.inner_steps_taken += 1

    def reset_adaptation(self) -> None:
        """Back to theta: no inner steps taken on the current task."""
        self.inner_steps_taken = 0

    def _adapt(self, learner: MetaLearner, steps: int):
        task = self.task
        return learner.algorithm.adapt(learner.parameters(), task.x_support, task.y_support, steps, task.x_query, task.y_query)

    # -- the outer loop -------------------------------------------------------------------------
    def outer_steps(self, count: int = 1, seconds: float | None = None, record: bool = True) -> list[OuterRecord]:
        """Up to ``count`` meta-updates (fewer when ``seconds`` run out); companions take as many.

        With ``record`` the last step's metrics are kept and checked: on NaN or an exploding loss
        every learner goes back to its state at the last check and :class:`DivergedError` says why.
        Without it nothing is measured (the cheapest way to train between two looks).
        """
        learners = [self.learner, *self.companions.values()]
        if self._restore_point is None:
            self._restore_point = [learner.state_dict() for learner in learners]
        start = time.perf_counter()
        done = 0
        metrics = None
        while done < count:
            last = done + 1 == count or (seconds is not None and time.perf_counter() - start >= seconds)
            batch = self.learner.sample_batch()  # what outer_step draws itself; kept for the small multiples
            metrics = self.learner.outer_step(metrics=last and record, batch=batch)
            for companion in self.companions.values():
                companion.outer_step(metrics=False)
            done += 1
            if last:
                break
        self.last_batch = batch
        if not record:
            return []
        assert metrics is not None
        bad = not metrics.finite or metrics.query_loss_after > EXPLODED or not _finite(self.learner)
        bad_companion = next((role for role, c in self.companions.items() if not _finite(c)), None)
        if bad or bad_companion:
            for learner, backup in zip(learners, self._restore_point):
                learner.load_state_dict(backup)
            who = f"the {bad_companion} learner's parameters" if not bad else (
                f"query loss {metrics.query_loss_after:.3g}, meta-gradient norm {metrics.meta_grad_norm:.3g}")
            raise DivergedError(f"diverged at outer step {metrics.step}: {who}; "
                                f"restored step {self.learner.step}. Lower the inner learning rate or start a new model")
        self._restore_point = None  # this state is good: the next call saves it
        record = OuterRecord.from_metrics(metrics)
        return [record] if self.records.offer(record) else []

    # -- settings and models --------------------------------------------------------------------
    @property
    def fresh_settings(self) -> tuple[str, ...]:
        """The settings whose change starts a new model (MAML++ adds its step count: one rate per step)."""
        return (*FRESH_SETTINGS, *self.learner.algorithm.fresh_settings)

    def needs_fresh_model(self, changes: dict[str, Any]) -> bool:
        """True when applying ``changes`` throws the training away (a new model or algorithm)."""
        current = self.settings
        if "task" in changes and changes["task"] != current["task"] and (
                registry.is_classification(changes["task"]) or registry.is_classification(current["task"])):
            return True  # another kind of input or output: the network's shapes change
        return any(key in changes and str(changes[key]) != str(current.get(key)) for key in self.fresh_settings)

    def set_settings(self, changes: dict[str, Any]) -> None:
        """Apply settings; algorithm or model changes start a fresh model, the rest keep training."""
        config = apply_settings(self.config, changes)
        if config == self.config:
            return
        self._restore_point = None
        fresh = self.needs_fresh_model(changes)
        previous = self.settings
        changed = {key for key, value in changes.items() if key in previous and str(value) != str(previous[key])}
        reseed = config.train.seed != self.config.train.seed
        redraw = reseed or config.task != self.config.task or config.train.shots != self.config.train.shots
        if fresh:
            self.learner = MetaLearner(config, self.learner.device)
            self.records = []
            self.source, self.saved_step = "new model", None
        else:
            self.learner = _rebuild(self.learner, config, reseed)
        self.companions = {role: _rebuild(c, companion_config(config, c.config.algo.name), reseed,
                                          fresh or bool(changed & set(c.algorithm.fresh_settings)))
                           for role, c in self.companions.items()}
        if reseed:
            self._reseed_tasks()
            self.task_number = 0
        if redraw:
            self.new_task()

    def new_model(self) -> None:
        """Throw the training away: a fresh random model with the same settings."""
        self._restore_point = None
        self.learner = MetaLearner(self.config, self.learner.device)
        self.companions = {role: MetaLearner(c.config, c.device) for role, c in self.companions.items()}
        self.records = []
        self.source, self.saved_step = "new model", None

    def set_companion(self, role: str, algorithm: str | None) -> None:
        """Train a second learner side by side from now on (``None`` removes it)."""
        self._restore_point = None
        if algorithm is None:
            self.companions.pop(role, None)
            return
        registry.lookup("algorithm", registry.ALGORITHMS, algorithm)
        current = self.companions.get(role)
        if current is None or current.config.algo.name != algorithm:
            self.companions[role] = MetaLearner(companion_config(self.config, algorithm), self.learner.device)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the main learner into a run directory, in the format ``maml-tui train`` writes."""
        run = RunDirectory(path)
        if run.checkpoint_path.exists():
            run.load_config()  # refuse to overwrite something that is not a run directory
        else:
            run.check_creatable()
        if not _finite(self.learner):
            raise DivergedError("the parameters are not finite; nothing was saved")
        with RunLock(run.path, "the maml-tui explorer"):  # refused while a train or another explorer writes it
            return self._save_locked(run)

    def _save_locked(self, run: RunDirectory) -> Path:
        if run.checkpoint_path.exists():
            run.write_config(self.config)
        else:
            run.create(self.config)
        run.save_checkpoint(self.learner.state_dict(), self.config)
        as_dicts = lambda records: [{**asdict(r), "inner_grad_norms": [r.inner_grad_norm], "its_per_second": 0.0}  # noqa: E731
                                    for r in records if r.step <= self.learner.step]
        same_run = self.source is not None and Path(self.source).resolve() == run.path.resolve()
        existing = run.read_metrics()
        if same_run and all(r.get("step", 0) <= self.learner.step for r in existing):
            # continuing the run these records came from: keep its (richer) records, add the newer ones
            last = max((r.get("step", 0) for r in existing), default=0)
            run.append_records(as_dicts(r for r in self.records if r.step > last))
        else:  # another run's history: replace it rather than mix two runs
            run.truncate_metrics(-1)
            run.append_records(as_dicts(self.records))
        self.source, self.saved_step = str(run.path), self.learner.step
        write_preview(run.path, self.learner.device)
        return run.path

    @property
    def unsaved_steps(self) -> int:
        """Outer steps trained since the model was last saved or opened (all of them for a new model)."""
        return self.learner.step - (self.saved_step if self.saved_step is not None else 0)

    def autosave(self, path: str | Path) -> Path:
        """Keep the current model safe in ``path`` (a run directory of its own, every file written
        atomically), with where it came from, without changing what counts as saved."""
        run = RunDirectory(path)
        run.path.mkdir(parents=True, exist_ok=True)
        if not _finite(self.learner):
            raise DivergedError("the parameters are not finite; the last autosave is kept")
        run.write_config(self.config)
        run.save_checkpoint(self.learner.state_dict(), self.config)
        run.replace_records([{**asdict(r), "inner_grad_norms": [r.inner_grad_norm], "its_per_second": 0.0}
                             for r in self.records if r.step <= self.learner.step])
        run.write_json(AUTOSAVE_FILE, {"format": AUTOSAVE_FORMAT, "version": 1, "source": self.source,
                                       "saved_step": self.saved_step, "step": self.learner.step, "time": time.time()})
        return run.path

    @classmethod
    def restore(cls, path: str | Path, device: str = "auto") -> "ExplorerSession":
        """The session an autosave holds, knowing again where its model came from."""
        session = cls.open(path, device)
        marker = read_autosave_marker(Path(path))
        if marker is None:
            session.source, session.saved_step = "autosave", None
            session.notes.append(f"{Path(path) / AUTOSAVE_FILE} is missing or not an autosave marker, so where this "
                                 "model came from is not known; it counts as unsaved")
        else:
            session.source, session.saved_step = marker
        return session

    def preview(self) -> dict[str, Any]:
        """The events the explorer starts with, as plain JSON: the first snapshot and the records."""
        return {"format": PREVIEW_FORMAT, "version": 1, "catalog": catalog(),
                "snapshot": _json_safe(self.snapshot().to_dict()), "records": [_json_safe(asdict(r)) for r in self.records]}

    def load(self, path: str | Path, role: str = "main") -> None:
        """Open a run directory (or checkpoint file) as the main learner or as a companion."""
        learner = MetaLearner.from_run(path, self.learner.device)
        self._restore_point = None
        if role == "main":
            self.learner = learner
            self.records = _read_records(Path(path), self.notes)
            self.source, self.saved_step = str(path), learner.step
            self.companions = {r: MetaLearner(companion_config(learner.config, c.config.algo.name), learner.device)
                               for r, c in self.companions.items()}
            self._reseed_tasks()
            self.new_task()
        else:
            if learner.config.model != self.config.model:
                raise ValueError(f"{path} holds a {learner.config.model.hidden} model; the explorer's is {self.config.model.hidden}")
            self.companions[role] = learner

    # -- the picture ----------------------------------------------------------------------------
    def view_batch(self) -> tuple[str, TaskBatch]:
        """``("last", the last outer step's meta-batch)``, or before any (or after a change of shots)
        ``("next", a meta-batch drawn like the next one)`` from a seeded stream of its own."""
        batch = self.last_batch
        if batch is not None and batch.x_support.shape[1] == self.config.train.shots:
            return "last", batch
        train = self.config.train
        generator = torch.Generator(device=self.learner.device).manual_seed(20_011 + train.seed)
        return "next", self.learner.family.sample(train.meta_batch_size, train.shots, train.query, generator)

    def gradient_view(self) -> dict[str, Any]:
        """The meta-gradient panel: on the meta-batch of :meth:`view_batch`, at the current theta, the
        exact second-order MAML meta-gradient (the run's model, loss, inner rate and steps) and the
        first-order, Reptile, iMAML and finite-difference ones, each with its cosine to the exact one,
        norm ratio, time and peak memory (:func:`engine.gradcompare.compare_meta_gradients`)."""
        from engine.gradcompare import compare_meta_gradients

        source, batch = self.view_batch()
        learner, algo = self.learner, self.config.algo
        params = learner.algorithm.model_params(learner.parameters())
        start = time.perf_counter()
        rows = compare_meta_gradients(learner.model, learner.family.loss, params, batch, algo.inner_lr, algo.inner_steps)
        return {"step": learner.step, "batch_source": source, "tasks": batch.num_tasks, "task": self.config.task.name,
                "run_algorithm": algo.name, "inner_lr": algo.inner_lr, "inner_steps": algo.inner_steps,
                "rows": rows, "seconds": time.perf_counter() - start}

    def sharpness_view(self) -> dict[str, Any]:
        """``alpha * lambda_max`` of the current task's support loss: lambda_max (power iteration on
        exact Hessian-vector products, :func:`engine.gradcompare.task_sharpness`) at theta and, when
        inner steps were taken, at the adapted theta' after them; ``reason`` says why not (else "")."""
        from engine.gradcompare import SHARPNESS_ITERATIONS, task_sharpness

        learner, task, taken = self.learner, self.task, self.inner_steps_taken
        view = {"step": learner.step, "task_number": self.task_number, "inner_steps_taken": taken,
                "inner_lr": self.config.algo.inner_lr, "iterations": SHARPNESS_ITERATIONS,
                "at_theta": math.nan, "at_adapted": math.nan, "reason": ""}
        names = learner.algorithm.adapt_names()
        try:
            start = learner.algorithm.inner_start(learner.parameters(), 1)
            view["at_theta"] = task_sharpness(learner.model, learner.family.loss, start, task.x_support, task.y_support, names, 0)
            if taken:
                history = self._adapt(learner, taken)
                view["at_adapted"] = task_sharpness(learner.model, learner.family.loss, history.params[taken],
                                                    task.x_support, task.y_support, names, taken)
        except Exception as error:  # noqa: BLE001 - the indicator says why instead
            text = str(error).strip().split("\n")[0] or type(error).__name__
            view["reason"] = f"no Hessian-vector products through this model ({text})"
        return view

    def batch_view(self, count: int) -> tuple[str, tuple[BatchTask, ...]]:
        """Up to ``count`` tasks of the last outer step's meta-batch (before any, of a meta-batch
        drawn like the next one), each fitted by theta and after the training's inner steps."""
        if self.classifies:
            return "", ()  # the small multiples draw curves; an episode has none
        source, batch = self.view_batch()
        count = min(count, batch.num_tasks)
        tasks = TaskBatch(batch.x_support[:count], batch.y_support[:count], batch.x_query[:count], batch.y_query[:count],
                          {k: v[:count] for k, v in batch.params.items()})
        steps = self.config.algo.inner_steps
        learner = self.learner
        history = learner.algorithm.adapt(learner.parameters(), tasks.x_support, tasks.y_support, steps, tasks.x_query, tasks.y_query)
        grid = self.grid.expand(count, -1, -1)
        with torch.no_grad():
            before = learner.model.forward(history.params[0], grid)
            after = learner.model.forward(history.params[-1], grid)
            truth = learner.family.truth(grid, tasks.params)
            losses_before, losses_after = history.query_loss[0].reshape(-1), history.query_loss[-1].reshape(-1)
        return source, tuple(BatchTask(
            task_params={k: float(v[t]) for k, v in tasks.params.items()},
            support_x=_floats(tasks.x_support[t]), support_y=_floats(tasks.y_support[t]),
            truth=_floats(truth[t]), before=_floats(before[t]), after=_floats(after[t]),
            loss_before=float(losses_before[t]), loss_after=float(losses_after[t]),
        ) for t in range(count))

    def snapshot(self, full_curve: bool = True) -> ExplorerSnapshot:
        """The current state as plain numbers.

        With ``full_curve=False`` (the engine's snapshots while training, between two drawn
        curves) a regression task without companions adapts only the steps taken and sends the
        loss-per-inner-step curve of the last full snapshot of the same task and model: the
        interface redraws that curve once a second while training, and the ten extra inner steps
        were a third of what a snapshot cost."""
        taken = self.inner_steps_taken
        key = (id(self.learner), self.task_number)
        cached = self._curve
        cheap = (not full_curve and not self.companions and not self.classifies and cached is not None
                 and cached[0] == key and len(cached[1]) > taken)
        steps = taken if cheap else max(CURVE_STEPS, taken)
        history = self._adapt(self.learner, steps)
        if not cheap:
            self._curve = (key, tuple(float(v.mean()) for v in history.query_loss))
        model = self.learner.model
        shown = dataclasses.replace(history, params=history.params[:taken + 1], support_loss=history.support_loss[:taken + 1],
                                    query_loss=history.query_loss[:taken + 1], grad_norm=history.grad_norm[:taken + 1])
        view = tuple(section.to_dict() for section in self.learner.algorithm.inspect(self.learner.params, shown, self.learner))
        if self.classifies:
            return self._classification_snapshot(history, view)
        with torch.no_grad():
            predictions = tuple(_floats(model.forward(history.params[s], self.grid)) for s in range(taken + 1))
            truth = _floats(self.learner.family.truth(self.grid, self.task.params))
            companions = []
            for role, companion in self.companions.items():
                other = self._adapt(companion, steps)
                companions.append(CompanionSnapshot(
                    role, companion.config.algo.name, companion.step,
                    _floats(companion.model.forward(other.params[taken], self.grid)),
                    tuple(float(v.mean()) for v in other.query_loss),
                ))
        task = self.task
        return ExplorerSnapshot(
            step=self.learner.step,
            settings=self.settings,
            source=self.source,
            task_number=self.task_number,
            task_params={k: float(v[0]) for k, v in task.params.items()},
            grid_x=_floats(self.grid),
            truth=truth,
            support_x=_floats(task.x_support), support_y=_floats(task.y_support),
            query_x=_floats(task.x_query), query_y=_floats(task.y_query),
            inner_steps_taken=taken,
            predictions=predictions,
            support_loss=tuple(float(v.mean()) for v in history.support_loss[:taken + 1]),
            query_loss=tuple(float(v.mean()) for v in history.query_loss[:taken + 1]),
            curve=self._curve[1],
            inner_lr=self.config.algo.inner_lr,
            companions=tuple(companions),
            algorithm_view=view,
            fresh_settings=self.fresh_settings,
            unsaved_steps=self.unsaved_steps,
            **dict(zip(("batch_source", "batch_tasks"), self.batch_view(self.batch_count))) if self.batch_count else {},
        )

    def _classification_snapshot(self, history, view: tuple[dict, ...]) -> ExplorerSnapshot:
        """The snapshot of a classification episode: no curves, its images and probabilities instead."""
        taken = self.inner_steps_taken
        steps = len(history.query_loss) - 1
        companions = []
        for role, companion in self.companions.items():
            other = self._adapt(companion, steps)
            companions.append(CompanionSnapshot(role, companion.config.algo.name, companion.step, (),
                                                tuple(float(v.mean()) for v in other.query_loss),
                                                tuple(float(m["accuracy"].mean()) for m in other.query_metrics)))
        return ExplorerSnapshot(
            step=self.learner.step, settings=self.settings, source=self.source, task_number=self.task_number,
            task_params={}, grid_x=(), truth=(), support_x=(), support_y=(), query_x=(), query_y=(),
            inner_steps_taken=taken, predictions=tuple(() for _ in range(taken + 1)),
            support_loss=tuple(float(v.mean()) for v in history.support_loss[:taken + 1]),
            query_loss=tuple(float(v.mean()) for v in history.query_loss[:taken + 1]),
            curve=tuple(float(v.mean()) for v in history.query_loss),
            inner_lr=self.config.algo.inner_lr, companions=tuple(companions), algorithm_view=view,
            fresh_settings=self.fresh_settings, unsaved_steps=self.unsaved_steps,
            classification=self.classification_view(history),
        )

    def classification_view(self, history) -> dict[str, Any]:
        """The episode as plain data: every support image with its episode label and class name, a
        few query images (up to SHOWN_QUERIES_PER_CLASS of each class, first one of every class, then
        a second), their class probabilities after each of the inner steps taken (index s: after s
        steps, 0 = theta), and the accuracy on the whole query set after 0..S steps.

        Images are lists of rows of grey values in [0, 1] (channels averaged, pooled to at most
        SHOWN_PIXELS a side). The probabilities come from the whole query set's forward pass, so a
        network whose batch norm uses the batch's statistics gives the same numbers as the accuracy.
        """
        family, task, model = self.episode_family(), self.task, self.learner.model
        taken = self.inner_steps_taken
        ways = family.ways
        classes = [int(c) for c in task.params["classes"][0].tolist()]
        query_labels = [int(v) for v in task.y_query[0].tolist()]
        members = [[i for i, label in enumerate(query_labels) if label == c][:SHOWN_QUERIES_PER_CLASS] for c in range(ways)]
        shown = [m[r] for r in range(SHOWN_QUERIES_PER_CLASS) for m in members if r < len(m)]
        with torch.no_grad():
            probabilities = []
            for s in range(taken + 1):
                logits = model.forward(history.params[s], task.x_query)[0]  # (query, ways)
                probabilities.append([[float(p) for p in row] for row in torch.softmax(logits[shown], dim=-1).tolist()])
            accuracy = [float(m["accuracy"].mean()) for m in history.query_metrics]
        return {
            "ways": ways,
            "max_ways": min(len(family.data.splits[s]) for s in family.data.splits),  # what the ways picker may offer
            "split": self.episode_split,  # "train": classes meta-trained on; "test": unseen ones
            "shots": self.config.train.shots,
            "classes": classes,
            "class_names": [family.class_name(c) for c in classes],  # by episode label
            "support": [{"label": int(label), "pixels": _pixels(image)}
                        for image, label in zip(task.x_support[0], task.y_support[0].tolist())],
            "query": [{"label": query_labels[i], "index": i, "pixels": _pixels(task.x_query[0, i])} for i in shown],
            "query_count": len(query_labels),
            "probabilities": probabilities,  # [step][shown query][label]
            "accuracy": accuracy[:taken + 1],  # on the whole query set, after 0..inner_steps_taken steps
            "accuracy_curve": accuracy,  # after 0..max(CURVE_STEPS, taken) steps
        }


def _pixels(image: torch.Tensor) -> list[list[float]]:
    """An image (C, H, W) as rows of grey values in [0, 1], pooled to at most SHOWN_PIXELS a side."""
    grey = image.detach().float().mean(dim=0, keepdim=True).cpu()
    factor = max(1, math.ceil(max(grey.shape[-2:]) / SHOWN_PIXELS))
    if factor > 1:
        grey = torch.nn.functional.avg_pool2d(grey, factor, ceil_mode=True)
    return [[round(min(max(v, 0.0), 1.0), 3) for v in row] for row in grey[0].tolist()]


# -- helpers --------------------------------------------------------------------------------------
PREVIEW_FORMAT = "maml-tui-preview"
AUTOSAVE_FILE = "autosave.json"  # in an autosave directory: where its model came from, and when
AUTOSAVE_FORMAT = "maml-tui-autosave"


def read_autosave_marker(path: Path) -> tuple[str, int | None] | None:
    """``(source, saved_step)`` of an autosave directory's marker, or None when it is missing or not
    one: ``{"format": "maml-tui-autosave", "version": 1, "source": str, "saved_step": int >= 0 or null,
    "step": int, "time": float}`` (a marker of the first explorers, without format and version, is
    read the same way)."""
    try:
        marker = json.loads((path / AUTOSAVE_FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(marker, dict) or marker.get("format", AUTOSAVE_FORMAT) != AUTOSAVE_FORMAT or marker.get("version", 1) != 1:
        return None
    source, saved = marker.get("source"), marker.get("saved_step")
    if not isinstance(source, str) or not (saved is None or (type(saved) is int and saved >= 0)):
        return None
    return source, saved


def catalog() -> dict[str, Any]:
    """What exists, for the explorer's pickers: the registry's task families and algorithms, each
    with its kind (a task family's "regression" or "classification"; an algorithm's "classification"
    when it runs on nothing else, "" otherwise)."""
    from engine.algorithms import ALGORITHMS

    return {
        "tasks": [{"name": e.name, "summary": e.summary, "kind": e.kind} for e in registry.TASKS.values()],
        # kind "classification": only for classification families (the pickers offer it there only)
        "algorithms": [{"name": name, "summary": registry.ALGORITHMS[name].summary, "paper": cls.paper,
                        "inner_lr": cls.defaults["inner_lr"], "inner_steps": cls.defaults["inner_steps"],
                        "kind": registry.ALGORITHMS[name].kind}
                       for name, cls in ALGORITHMS.items()],
    }


def write_preview(path: str | Path, device: str | torch.device = "cpu") -> Path:
    """Write ``preview.json`` into a run directory: what the explorer will show when it opens the run
    (a fresh session's first snapshot and the run's records). The interface draws it at once, while
    the engine process is still importing torch; the engine's own first snapshot then replaces it
    with the same picture."""
    run = RunDirectory(path)
    session = ExplorerSession.open(run.path, device=device)
    run.write_preview(session.preview())
    return run.preview_path


def _json_safe(value: Any) -> Any:
    """NaN and infinities as None, so the preview is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value

def _read_records(path: Path, notes: list[str] | None = None) -> list[OuterRecord]:
    """The records of a run's metrics.jsonl; lines that are not records are skipped (never a reason to
    refuse the run) and, when ``notes`` is given, counted in a note there."""
    if not Path(path).is_dir():
        return []
    run = RunDirectory(path)
    records, skipped = [], 0
    for data in run.read_metrics():
        try:
            records.append(OuterRecord.from_metrics(data))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            skipped += 1  # a record with a value of the wrong kind (hand-edited)
    skipped += run.skipped
    if skipped and notes is not None:
        notes.append(f"{run.metrics_path}: skipped {skipped} line{'s' * (skipped != 1)} that {'are' if skipped != 1 else 'is'} "
                     "not a record (cut short by a crash or a full disk, or edited); the charts show the rest")
    return records


def _finite(learner: MetaLearner) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in learner.params.values())


def _rebuild(learner: MetaLearner, config: RunConfig, reseed: bool = False, fresh: bool = False) -> MetaLearner:
    """A learner for ``config`` that keeps ``learner``'s training (unless ``fresh``)."""
    rebuilt = MetaLearner(config, learner.device)
    if fresh:
        return rebuilt
    rebuilt.load_state_dict(learner.state_dict())
    if reseed:
        rebuilt.generator.manual_seed(config.train.seed)
    return rebuilt
