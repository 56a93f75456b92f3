"""Omniglot (Lake, Salakhutdinov, Tenenbaum 2015): 1,623 handwritten characters of 50 alphabets, 20
drawings each, in the archive's own layout::

    DATA_DIR/images_background/<alphabet>/<character>/<drawing>.png   (30 alphabets)
    DATA_DIR/images_evaluation/<alphabet>/<character>/<drawing>.png   (20 alphabets)

As in Santoro et al. 2016 and Finn et al. 2017, images are resized to 28x28 (ink 1, paper 0) and
every character turned by 90, 180 and 270 degrees is a class of its own. The characters of both
archives are pooled, sorted by alphabet and name, and shuffled with seed 1 (``random.Random``, as in
MAML's reference code): the first 1,200 are meta-training (the last 100 of those held out as
meta-validation) and the remaining 423 meta-test; a collection of another size is split in the
same proportions. The resized images are cached in ``DATA_DIR/maml-tui-omniglot-28.pt`` (about
25 MB), so only the first load reads the 32,460 PNGs.

``download`` fetches the two archives from the dataset's repository with a progress callback and
checks their MD5 sums. Reading PNGs needs Pillow (``pip install 'maml-tui[omniglot]'``).
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import torch

from engine.classification import ImageClasses, rotated_classes, rotation_names
from engine.errors import ConfigError

ARCHIVES = {"images_background": "68d2efa1b9178cc56df9314c21c6e718",
            "images_evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}.zip"
SIDE = 28
ROTATIONS = 4
CACHE = "maml-tui-omniglot-28.pt"
CACHE_FORMAT = "maml-tui-omniglot"
CACHE_VERSION = 1
FULL, FULL_TRAIN, FULL_VAL = 1623, 1200, 100  # Finn's split of the whole collection
_LOADED: dict[str, ImageClasses] = {}


def default_dir() -> Path:
    """Where Omniglot is kept unless ``--data-dir`` says otherwise: $MAML_TUI_DATA_DIR/omniglot, or
    the user's cache directory."""
    base = os.environ.get("MAML_TUI_DATA_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "maml-tui")
    return Path(base) / "omniglot"


def data_dir(setting: str | os.PathLike | None) -> Path:
    return Path(setting).expanduser() if setting else default_dir()


def characters(root: Path) -> list[tuple[str, list[Path]]]:
    """``(alphabet/character, drawings)`` of both archives, sorted; ConfigError when there are none."""
    found = []
    for archive in ARCHIVES:
        folder = root / archive
        if not folder.is_dir():
            continue
        for alphabet in sorted(p for p in folder.iterdir() if p.is_dir()):
            for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
                drawings = sorted(character.glob("*.png"))
                if drawings:
                    found.append((f"{alphabet.name}/{character.name}", drawings))
    if not found:
        raise ConfigError(f"no Omniglot in {root}: it needs images_background/ and images_evaluation/ holding "
                          "<alphabet>/<character>/*.png; fetch them with maml-tui download omniglot, or give --data-dir")
    return found


def split(count: int) -> dict[str, range]:
    """Finn's split of ``count`` shuffled characters: 1,200 / 423 of 1,623, 100 of the 1,200 held out for
    validation; other sizes in the same proportions (at least two characters each)."""
    if count == FULL:
        train, val = FULL_TRAIN - FULL_VAL, FULL_VAL
    else:
        if count < 6:
            raise ConfigError(f"Omniglot needs at least 6 characters to split into train, validation and test, found {count}")
        val = max(2, round(count * FULL_VAL / FULL))  # two characters: 8 classes with their rotations, for 5-way
        test = max(2, round(count * (FULL - FULL_TRAIN) / FULL))
        train = count - val - test
    return {"train": range(0, train), "val": range(train, train + val), "test": range(train + val, count)}


def _read(paths: list[Path]) -> torch.Tensor:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("reading Omniglot's PNG files needs Pillow; install it with: pip install 'maml-tui[omniglot]'") from None
    out = torch.empty(len(paths), 1, SIDE, SIDE, dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                small = image.convert("L").resize((SIDE, SIDE), Image.LANCZOS)
        except (OSError, ValueError) as error:
            raise ConfigError(f"{path} is not a readable image ({type(error).__name__}); the Omniglot copy may be damaged") from None
        pixels = torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(SIDE, SIDE)
        out[i, 0] = 255 - pixels  # ink 1, paper 0
    return out


def load(root: Path) -> ImageClasses:
    """The collection in ``root`` (read once per process, and cached on disk after the first time)."""
    key = str(root.resolve())
    if key in _LOADED:
        return _LOADED[key]
    found = characters(root)
    names = [name for name, _ in found]
    data = _from_cache(root, names)
    if data is None:
        paths = [path for _, drawings in found for path in drawings]
        labels = torch.tensor([c for c, (_, drawings) in enumerate(found) for _ in drawings], dtype=torch.long)
        images = _read(paths)
        _write_cache(root, names, images, labels)
    else:
        images, labels = data
    order = list(range(len(names)))
    random.Random(1).shuffle(order)  # MAML's reference code: random.seed(1); random.shuffle(characters)
    parts = split(len(names))
    splits = {name: rotated_classes([order[i] for i in part], ROTATIONS) for name, part in parts.items()}
    classes = ImageClasses(images, labels, splits, rotation_names(names, ROTATIONS), rotations=ROTATIONS)
    _LOADED[key] = classes
    return classes


def _from_cache(root: Path, names: list[str]):
    path = root / CACHE
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, weights_only=True)
        if (isinstance(cached, dict) and cached.get("format") == CACHE_FORMAT and cached.get("version") == CACHE_VERSION
                and cached.get("names") == names and cached["images"].dtype == torch.uint8
                and tuple(cached["images"].shape[1:]) == (1, SIDE, SIDE)
                and cached["labels"].shape == (cached["images"].shape[0],)
                and int(cached["labels"].max()) < len(names) and int(cached["labels"].min()) >= 0):
            return cached["images"], cached["labels"].long()
    except Exception:  # a damaged or foreign cache is rebuilt from the PNGs
        pass
    return None


def _write_cache(root: Path, names, images, labels) -> None:
    from engine.checkpoint import _atomic_write

    payload = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "names": names, "images": images, "labels": labels}
    try:
        _atomic_write(root / CACHE, lambda file: torch.save(payload, file))
    except OSError:  # a read-only copy of the data: it is read again next time
        pass


def download(root: Path, progress: Callable[[str, int, int], None] | None = None, url: str = URL) -> Path:
    """Fetch and unpack both archives into ``root`` (each checked against its MD5 sum); ``progress``
    gets (archive, bytes so far, total bytes). ConfigError with one sentence when it cannot."""
    import urllib.error
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    for name, md5 in ARCHIVES.items():
        if (root / name).is_dir() and any((root / name).iterdir()):
            continue
        address = url.format(name=name)
        handle, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.tmp", dir=root)
        try:
            digest = hashlib.md5()
            with os.fdopen(handle, "wb") as file:
                try:
                    with urllib.request.urlopen(address, timeout=30) as response:
                        total, done = int(response.headers.get("Content-Length") or 0), 0
                        while chunk := response.read(1 << 16):
                            file.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if progress is not None:
                                progress(name, done, total)
                except (urllib.error.URLError, OSError, ValueError) as error:
                    reason = getattr(error, "reason", None) or error
                    raise ConfigError(f"cannot download {address} ({reason}); with no network, fetch images_background.zip "
                                      f"and images_evaluation.zip elsewhere, unzip both into {root} and give --data-dir {root}") from None
            if digest.hexdigest() != md5:
                raise ConfigError(f"{address} arrived damaged (MD5 {digest.hexdigest()}, expected {md5}); try again")
            with zipfile.ZipFile(tmp) as archive:
                archive.extractall(root)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return root


def make_synthetic(root: Path, alphabets: int = 4, characters_per_alphabet: int = 4, drawings: int = 20,
                   seed: int = 0) -> Path:
    """A small collection in Omniglot's own layout (two archives of 105x105 one-bit PNGs): each
    character is three random strokes, each drawing of it the same strokes moved by a few pixels.
    For the tests and for trying the whole pipeline without the real data."""
    from PIL import Image, ImageDraw

    generator = random.Random(seed)
    for a in range(alphabets):
        archive = "images_background" if a < (alphabets + 1) // 2 else "images_evaluation"
        for c in range(characters_per_alphabet):
            folder = root / archive / f"Alphabet_{a:02d}" / f"character{c + 1:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            strokes = [[(generator.uniform(15, 90), generator.uniform(15, 90)) for _ in range(3)] for _ in range(3)]
            for d in range(drawings):
                image = Image.new("1", (105, 105), 1)
                pen = ImageDraw.Draw(image)
                for stroke in strokes:
                    moved = [(x + generator.uniform(-4, 4), y + generator.uniform(-4, 4)) for x, y in stroke]
                    pen.line(moved, fill=0, width=generator.randint(4, 7))
                image.save(folder / f"{a * 100 + c:04d}_{d + 1:02d}.png")
    return root
