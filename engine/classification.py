"""Few-shot classification: labelled image datasets split by class, and N-way K-shot episodes.

A dataset (:class:`ImageClasses`) is a stack of images ``(n, C, H, W)`` in [0, 1] with a class
per image and a split of the classes into meta-train, meta-validation and meta-test. An episode
(a task) draws N classes of one split, K support and Q query images of each, and labels the N
classes 0..N-1 in an order drawn per episode, so no class keeps a label across episodes. All
draws come from an explicit generator; a meta-batch is ``x (tasks, N*K, C, H, W)`` and
``y (tasks, N*K)`` on the family's device, with the classes drawn in ``params["classes"]``.

``digits`` is the 8x8 handwritten digits that scikit-learn ships in its wheel (1,797 images,
10 digits), each rotated by 0, 90, 180 and 270 degrees into its own class (40 classes). The
classes are split by digit, so no digit is seen in two splits: meta-train 0, 1, 2, 3, 6, 9
(24 classes; 6 and 9 together, since one is the other turned over), meta-validation 7 and 8
(8 classes) and meta-test 4 and 5 (8 classes, none of them a rotation of another).
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engine.errors import ConfigError, shown
from engine.losses import CrossEntropy
from engine.tasks import TaskBatch, TaskFamily

SPLITS = ("train", "val", "test")
MAX_WAYS = 1_000


@dataclass(frozen=True)
class ImageClasses:
    """Images ``(n, C, H, W)`` (float in [0, 1], or uint8 in 0..255), each of a base class, and the
    classes of each split. With ``rotations = R`` every base class ``b`` gives R classes
    ``b * R + r``: its images turned by ``r * 90`` degrees (rotations as new classes, as in Santoro
    et al. 2016 and Finn et al. 2017), made when an episode is drawn, so only the base images are kept."""

    images: Tensor
    labels: Tensor  # the base class of every image (n,)
    splits: dict[str, tuple[int, ...]]  # classes, after rotation
    names: tuple[str, ...]  # a name per class (after rotation), e.g. "7 turned 90°"
    rotations: int = 1

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def members(self) -> dict[int, Tensor]:
        """The image indices of every class (a rotated class shares its base class's images)."""
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=self.num_classes // self.rotations).tolist()
        base = dict(enumerate(torch.split(order, counts)))
        return {c: base[c // self.rotations] for c in range(self.num_classes)}

    def image(self, index: int, cls: int) -> Tensor:
        """Image ``index`` as class ``cls`` shows it (turned by its rotation), as floats in [0, 1]."""
        image = self.images[index]
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image
        return torch.rot90(image, cls % self.rotations, dims=(1, 2))


def rotation_names(base: list[str], rotations: int = 4) -> tuple[str, ...]:
    return tuple(name if r == 0 else f"{name} turned {90 * r}°" for name in base for r in range(rotations))


def rotated_classes(bases, rotations: int = 4) -> tuple[int, ...]:
    return tuple(b * rotations + r for b in bases for r in range(rotations))


DIGITS_TRAIN, DIGITS_VAL, DIGITS_TEST = (0, 1, 2, 3, 6, 9), (7, 8), (4, 5)
ROTATIONS = (0, 90, 180, 270)
_DIGITS_CACHE: dict[str, ImageClasses] = {}


def digits_file() -> Path:
    """Where scikit-learn keeps its digits (found without importing scikit-learn, which is slow to import)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise ConfigError("the digits task family reads the 8x8 digits that scikit-learn ships, and scikit-learn is "
                          "not installed; install it with: pip install 'maml-tui[digits]'")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise ConfigError(f"scikit-learn is installed but its digits file is missing ({path}); reinstall scikit-learn")
    return path


def load_digits() -> ImageClasses:
    """The 1,797 digits, four rotations each as 40 classes (read once per process)."""
    if "digits" in _DIGITS_CACHE:
        return _DIGITS_CACHE["digits"]
    path = digits_file()
    try:
        rows = [line.split(",") for line in gzip.open(path, "rt").read().split()]
        table = torch.tensor([[int(v) for v in row] for row in rows], dtype=torch.int64)
    except (OSError, ValueError, EOFError) as error:
        raise ConfigError(f"scikit-learn's digits file {path} cannot be read ({error}); reinstall scikit-learn") from None
    if table.dim() != 2 or table.shape[1] != 65:
        raise ConfigError(f"scikit-learn's digits file {path} does not hold 8x8 images; reinstall scikit-learn")
    images = (table[:, :64].to(torch.float32) / 16.0).view(-1, 1, 8, 8)
    r = len(ROTATIONS)
    data = ImageClasses(images, table[:, 64], {"train": rotated_classes(DIGITS_TRAIN, r), "val": rotated_classes(DIGITS_VAL, r),
                                               "test": rotated_classes(DIGITS_TEST, r)},
                        rotation_names([str(d) for d in range(10)], r), rotations=r)
    _DIGITS_CACHE["digits"] = data
    return data


class ClassificationFamily(TaskFamily):
    """N-way K-shot episodes of an :class:`ImageClasses` dataset; ``shots`` and ``query`` count per class.

    Its one setting is ``ways`` (N, at least 2 and at most the classes of the smallest split); the
    split it draws from is ``split`` (meta-train unless told otherwise).
    """

    name = "classification"
    defaults: dict[str, Any] = {"ways": 5}
    loss = CrossEntropy()
    classification = True

    def __init__(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, split: str = "train", **ranges: Any):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        super().__init__(device=device, dtype=dtype, **ranges)
        self.split = split
        self.data = self.load()
        smallest = min(len(self.data.splits[s]) for s in SPLITS)
        if self.ways > smallest:
            raise ConfigError(f"--ways must be at most {smallest} for task family {self.name} (its smallest split has "
                              f"{smallest} classes), got {self.ways}")
        self._members = self.data.members()
        images = self.data.images
        self._images = (images.to(self.device) if images.dtype == torch.uint8 else images.to(self.device, self.dtype))

    def load(self) -> ImageClasses:
        raise NotImplementedError

    @classmethod
    def check_ranges(cls, ranges: Any) -> dict[str, Any]:
        if not isinstance(ranges, dict):
            raise ConfigError(f"the settings of task family {shown(cls.name)} must be a mapping, got {shown(ranges)}")
        unknown = sorted(str(k) for k in set(ranges) - set(cls.defaults))
        if unknown:
            raise ConfigError(f"task family {shown(cls.name)} has no setting {shown(unknown[0])}; it has {', '.join(sorted(cls.defaults))}")
        checked = dict(cls.defaults)
        if "ways" in ranges:
            ways = ranges["ways"]
            if isinstance(ways, bool) or not isinstance(ways, int) or not 2 <= ways <= MAX_WAYS:
                raise ConfigError(f"--ways must be a whole number from 2 to {MAX_WAYS:,}, got {shown(ways)}")
            checked["ways"] = ways
        if "data_dir" in ranges:
            folder = ranges["data_dir"]
            if not isinstance(folder, str) or len(folder.encode("utf-8", "surrogateescape")) > 4096 or \
                    any(not c.isprintable() for c in folder):
                raise ConfigError(f"--data-dir must be a folder's path (printable, at most 4,096 bytes), got {shown(folder)}")
            checked["data_dir"] = folder
        return checked

    @property
    def ways(self) -> int:
        return int(self.ranges["ways"])

    @property
    def output_dim(self) -> int:  # one logit per way
        return self.ways

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.data.images.shape[1:])

    @property
    def input_dim(self) -> int:
        return math.prod(self.input_shape)

    @property
    def train_classes(self) -> tuple[int, ...]:
        """The meta-train classes (after rotation): what a global classifier, pretrain's, is trained over."""
        return tuple(self.data.splits["train"])

    def with_split(self, split: str) -> "ClassificationFamily":
        """The same family drawing its episodes from another split (``val`` or ``test``)."""
        return type(self)(device=self.device, dtype=self.dtype, split=split, **self.ranges)

    def class_name(self, index: int) -> str:
        return self.data.names[index]

    def smallest_class(self, split: str | None = None) -> int:
        return min(self._members[c].numel() for c in self.data.splits[split or self.split])

    def check_episode(self, shots: int, query: int) -> None:
        """ConfigError unless every class of every split has ``shots + query`` images for an episode."""
        need = shots + query
        for split in SPLITS:
            have = self.smallest_class(split)
            if need > have:
                raise ConfigError(f"--shots plus --query is {need} images per class, more than the {have} that the smallest "
                                  f"class of the {self.name} family's {split} split holds")

    def sample(self, num_tasks: int, shots: int, query: int, generator: torch.Generator) -> TaskBatch:
        """``num_tasks`` episodes: N classes, ``shots`` support and ``query`` query images of each."""
        if num_tasks < 1 or shots < 1 or query < 0:
            raise ValueError("num_tasks and shots must be positive and query must not be negative")
        need, have = shots + query, self.smallest_class()
        if need > have:
            raise ConfigError(f"--shots plus --query is {need} images per class, more than the {have} that the smallest "
                              f"class of the {self.name} family's {self.split} split holds")
        pool = torch.tensor(self.data.splits[self.split])
        n = self.ways
        # classes of each episode: the first N of a random permutation of the split (drawn on the CPU: the
        # same episodes on every device for a seed, since generators of different devices differ)
        cpu = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))
        classes = torch.stack([pool[torch.randperm(len(pool), generator=cpu)[:n]] for _ in range(num_tasks)])  # (tasks, N)
        picks = torch.empty(num_tasks, n, need, dtype=torch.long)
        for t in range(num_tasks):
            for w in range(n):
                members = self._members[int(classes[t, w])]
                picks[t, w] = members[torch.randperm(members.numel(), generator=cpu)[:need]]
        # class c of an episode is labelled 0..N-1 by its place in the permutation: a fresh labelling per episode
        labels = torch.arange(n).view(1, n, 1).expand(num_tasks, n, need)
        support_idx, query_idx = picks[:, :, :shots].reshape(num_tasks, -1), picks[:, :, shots:].reshape(num_tasks, -1)
        support_y, query_y = labels[:, :, :shots].reshape(num_tasks, -1), labels[:, :, shots:].reshape(num_tasks, -1)
        turns = (classes % self.data.rotations).view(num_tasks, n, 1).expand(num_tasks, n, need)
        support_turns, query_turns = turns[:, :, :shots].reshape(num_tasks, -1), turns[:, :, shots:].reshape(num_tasks, -1)
        device = self.device
        return TaskBatch(self._gather(support_idx, support_turns), support_y.to(device),
                         self._gather(query_idx, query_turns), query_y.to(device), {"classes": classes.to(device)})

    def _gather(self, index: Tensor, turns: Tensor) -> Tensor:
        """Images ``index`` (tasks, points) turned by ``turns`` quarter turns, as floats on the device."""
        images = self._images[index.to(self.device)]
        if images.dtype == torch.uint8:
            images = images.to(self.dtype) / 255.0
        if self.data.rotations > 1:
            turns = turns.to(self.device)
            for r in range(1, self.data.rotations):
                mask = turns == r
                if bool(mask.any()):
                    images[mask] = torch.rot90(images[mask], r, dims=(-2, -1))
        return images

    # regression-only parts of the base class
    def sample_params(self, num_tasks, generator):
        raise TypeError(f"{self.name} draws whole episodes; use sample()")

    def truth(self, x, params):
        raise TypeError(f"{self.name} is a classification family; it has no curve to draw")


class Digits(ClassificationFamily):
    """N-way K-shot episodes of scikit-learn's 8x8 digits, rotations as extra classes."""

    name = "digits"

    def load(self) -> ImageClasses:
        return load_digits()


class Omniglot(ClassificationFamily):
    """N-way K-shot episodes of Omniglot's characters at 28x28, rotations as extra classes (see
    :mod:`engine.omniglot`); ``data_dir`` is where the archives are unpacked ("" for the default place)."""

    name = "omniglot"
    defaults: dict[str, Any] = {"ways": 5, "data_dir": ""}

    def load(self) -> ImageClasses:
        from engine import omniglot

        return omniglot.load(omniglot.data_dir(self.ranges["data_dir"]))
