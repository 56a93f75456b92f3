"""The two baselines every meta-learning paper compares to (Finn et al. 2017, section 5.1).

* ``pretrain``: one network trained with the outer optimizer on the loss of all tasks' points
  (support and query) with no adaptation during training; fine-tuned at test time.
  On classification an episode's labels 0..N-1 mean nothing across episodes (they are drawn
  afresh each time), so joint training on them learns nothing; there ``pretrain`` is the
  "Baseline" of Chen, Liu, Kira, Wang, Huang 2019 (arXiv:1904.04232): the body and one global
  classifier over every meta-train class (``pretrain.classifier.*``) are trained with
  cross-entropy on the classes' own labels, and at test time the global classifier is dropped, a
  new N-way head starts at zero and only the head is fine-tuned on the support set (the body
  stays fixed). A zero head's first SGD step gives every class the weight
  ``rate * (mean feature of the class - mean feature of the support set) / N``: a nearest-centroid
  classifier on the pretrained features, which later steps refine.
* ``scratch``: the random initialisation, fine-tuned at test time; there is nothing to train.

Both fine-tune with plain SGD on every parameter through the same ``adapt`` as the meta-learners,
at the step the paper tuned for its baseline (0.01 at K = 5; give another with ``--inner-lr``).
Their metrics report the query loss after ``inner_steps`` of fine-tuning so charts compare like
with like.
"""

from __future__ import annotations

import torch

import math

from engine.algorithms.base import Algorithm, MetaStep, Section, _grad, _leaves
from engine.functional import task_losses
from engine.losses import CrossEntropy
from engine.model import Params
from engine.tasks import TaskBatch

CLASSIFIER = ("pretrain.classifier.weight", "pretrain.classifier.bias")


class _Baseline(Algorithm):
    paper = "Finn, Abbeel, Levine 2017, arXiv:1703.03400, section 5.1"
    defaults = {"inner_lr": 0.01, "inner_steps": 1}  # the paper's tuned fine-tuning step for K = 5

    def fill_metrics(self, step: MetaStep, start: Params, batch: TaskBatch, inner=None, final=None) -> None:
        history = self.adapt(start, batch.x_support, batch.y_support, self.inner_steps,
                             batch.x_query, batch.y_query, keep_params=False)
        step.support_loss = history.support_loss[0].mean()
        step.query_loss_before = history.query_loss[0].mean()
        step.query_loss_after = history.query_loss[-1].mean()
        step.inner_grad_norms = [g.mean() for g in history.grad_norm[:-1]]

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        return "plain autograd (no inner loop in training)"


class Pretrain(_Baseline):
    name = "pretrain"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.classes: tuple[int, ...] | None = None  # the global classifier's classes (classification only)

    def prepare(self, family) -> None:
        classes = getattr(family, "train_classes", None)
        self.classes = tuple(classes) if classes and isinstance(self.loss, CrossEntropy) else None

    @property
    def global_classifier(self) -> bool:
        return self.classes is not None

    def _features(self) -> int:
        return self.model.shapes()[self.model.head_names[0]][0]

    def init(self, generator, device=None, dtype=torch.float32) -> Params:
        params = self.model.init(generator, device, dtype)
        if self.classes is not None:
            device = generator.device if device is None else torch.device(device)
            features, classes = self._features(), len(self.classes)
            bound = 1.0 / math.sqrt(features)  # PyTorch's nn.Linear default
            params[CLASSIFIER[0]] = (torch.rand((features, classes), generator=generator, device=device, dtype=dtype) * 2 - 1) * bound
            params[CLASSIFIER[1]] = torch.zeros(classes, device=device, dtype=dtype)
            for name in self.model.head_names:  # the episode head is never trained: fine-tuning starts it at zero
                params[name] = torch.zeros_like(params[name])
        return params

    def adapt_names(self) -> list[str]:
        return list(self.model.head_names) if self.classes is not None else list(self.model.names)

    def inner_start(self, params: Params, tasks: int) -> Params:
        start = self.model_params(params)
        if self.classes is not None:  # a new N-way head for every episode, at zero (a uniform guess)
            start = {n: torch.zeros_like(v) if n in self.model.head_names else v for n, v in start.items()}
        return start

    def global_labels(self, batch: TaskBatch, labels: torch.Tensor) -> torch.Tensor:
        """An episode's labels (tasks, points) as indices into the global classifier's classes."""
        drawn = batch.params["classes"].long()  # (tasks, N): the class of each episode label
        classes = drawn.gather(1, labels.long())
        lookup = torch.full((max(max(self.classes), int(drawn.max())) + 1,), -1, dtype=torch.long, device=labels.device)
        lookup[torch.tensor(self.classes, device=labels.device)] = torch.arange(len(self.classes), device=labels.device)
        index = lookup[classes]
        if bool((index < 0).any()):
            raise ValueError("pretrain's global classifier trains on the meta-train classes only; this batch has others")
        return index

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        leaves = _leaves(params)
        x = torch.cat([batch.x_support, batch.x_query], dim=1)  # (tasks, shots + query, in)
        y = torch.cat([batch.y_support, batch.y_query], dim=1)
        if self.classes is None:
            loss = task_losses(self.model, self.loss, leaves, x, y).mean()
        else:
            features = self.model.features(self.model_params(leaves), x)  # (tasks, points, F)
            logits = features @ leaves[CLASSIFIER[0]] + leaves[CLASSIFIER[1]]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), self.global_labels(batch, y).flatten())
        step = MetaStep(loss.detach(), _grad(loss, leaves), backend="autograd")
        if metrics:
            self.fill_metrics(step, leaves, batch)
        return step

    def inspect(self, params: Params, history=None, learner=None) -> list[Section]:
        if self.classes is None:
            return []
        weight = params[CLASSIFIER[0]].detach()
        return [Section("global classifier (Chen et al. 2019)", ("classes", "features", "weight norm"),
                        (("meta-train", (float(len(self.classes)), float(weight.shape[0]), float(weight.norm()))),))]


class Scratch(_Baseline):
    name = "scratch"
    trainable = False  # the trainer saves the initialisation and takes no outer steps

    def meta_step(self, params: Params, batch: TaskBatch, metrics: bool = False, progress: float = 0.0) -> MetaStep:
        history = self.adapt(params, batch.x_support, batch.y_support, self.inner_steps,
                             batch.x_query, batch.y_query, keep_params=False)
        step = MetaStep(history.query_loss[-1].mean(), {n: torch.zeros_like(v) for n, v in params.items()}, backend="none")
        if metrics:
            self.fill_metrics(step, params, batch)
        return step

    def backend_choice(self, shots: int, progress: float = 0.0) -> str:
        return "none (nothing to train)"
