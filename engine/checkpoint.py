"""Run directories: config, metrics and checkpoints, written atomically and read safely.

A run directory holds::

    config.json       {"format": "maml-tui-run", "version": 1, "config": RunConfig.to_dict(), ...}
    metrics.jsonl     one JSON object per logged outer step (pandas.read_json(lines=True))
    checkpoint.pt     {"format", "version", "step", "params", "optimizer", "rng", "buffers", "config"}
    preview.json      what the explorer shows when it opens the run: its first snapshot and the charted
                      records, so the interface can draw them before the engine (and torch) is up

Every write goes to a temporary file in the same directory and is renamed over the old one, so
a crash or Ctrl-C mid-save never leaves a half-written file. Checkpoints hold only tensors and
plain containers and are read with ``torch.load(weights_only=True)``: loading a run never
unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig
from engine.errors import MamlTuiError, RunError, shown  # noqa: F401  (RunError: engine.checkpoint.RunError, as before)
from engine.runlock import LOCK_FILE, RunLock, remove_temporary_files  # noqa: F401  (torch-free: the UI takes them too)

FORMAT = "maml-tui-checkpoint"
RUN_FORMAT = "maml-tui-run"
VERSION = 1
CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.json", "metrics.jsonl", "checkpoint.pt"
PREVIEW_FILE = "preview.json"  # what the explorer shows when it opens the run (plain JSON, see engine.explorer)


def _atomic_write(path: Path, write) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a run directory is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path: str | Path, state: dict, config: RunConfig) -> None:
    """Write ``state`` (MetaLearner.state_dict()) atomically, tensors moved to the CPU."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(state["step"]),
        "params": {n: v.detach().cpu() for n, v in state["params"].items()},
        "optimizer": _to_cpu(state.get("optimizer", {})),
        "rng": _to_cpu(state.get("rng", {})),
        "buffers": _to_cpu(state.get("buffers", {})),  # algorithm state that is not a parameter (Alpha-MAML's beta)
        "config": json.dumps(config.to_dict()),
    }
    _atomic_write(Path(path), lambda file: torch.save(payload, file))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely; raise :class:`RunError` with one sentence if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles; the sentence below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, corrupt or not a torch file at all
        raise RunError(f"{path} is not a readable checkpoint ({type(error).__name__}); it may be corrupt or truncated") from None
    check_format(path, state, FORMAT, "checkpoint")
    for key, kind in (("step", int), ("params", dict), ("config", str), ("optimizer", dict), ("rng", dict), ("buffers", dict)):
        if key not in state and key in ("step", "params", "config"):
            raise RunError(f"{path} is incomplete: it has no {shown(key)}")
        if key in state and (not isinstance(state[key], kind) or isinstance(state[key], bool)):
            wanted = {int: "a whole number", dict: "a mapping", str: "text"}[kind]
            label = {"step": "outer step", "params": "parameters", "config": "config", "optimizer": "optimizer state",
                     "rng": "random-number state", "buffers": "buffers"}[key]
            raise RunError(f"{path} is corrupt: its {label} ({shown(key)}) is not {wanted} (it is a {type(state[key]).__name__})")
    bad = [n for n, v in state["params"].items() if not torch.is_tensor(v) or not torch.isfinite(v).all()]
    if bad:
        raise RunError(f"{path} holds non-finite or invalid parameters ({bad[0]})")
    return state


def check_format(path: Path, document: Any, expected: str, what: str) -> None:
    """Refuse, naming ``path``, a document that is not a mapping of the ``expected`` format at
    :data:`VERSION` (there is one version so far: anything else is a newer maml-tui's, or not ours)."""
    if not isinstance(document, dict):
        raise RunError(f"{path} is not a maml-tui {what} (it holds a {type(document).__name__}, not a mapping)")
    if document.get("format") != expected:
        raise RunError(f"{path} is not a maml-tui {what} (its format is {shown(document.get('format'))}, not {shown(expected)})")
    version = document.get("version")
    if type(version) is not int:
        raise RunError(f"{path} has no valid format version (got {shown(version)}); it was not written by maml-tui")
    if version > VERSION:
        raise RunError(f"{path} was written by a newer maml-tui (format version {version}; this one reads version "
                       f"{VERSION}); upgrade maml-tui to open it")
    if version < VERSION:
        raise RunError(f"{path} has format version {version}, which no maml-tui release wrote; it cannot be read")


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class RunDirectory:
    """A run directory on disk: create, append metrics, save and load checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def preview_path(self) -> Path:
        return self.path / PREVIEW_FILE

    def replace_records(self, records: list[dict]) -> None:
        """Replace metrics.jsonl with ``records``, atomically."""
        text = "".join(json.dumps(record) + "\n" for record in records)
        _atomic_write(self.metrics_path, lambda f: f.write(text.encode()))

    def write_json(self, name: str, document: dict) -> None:
        """Write a small JSON file of the run directory's, atomically."""
        text = json.dumps(document, allow_nan=False)
        _atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def write_preview(self, document: dict) -> None:
        """Replace the explorer's preview of this run, atomically (strict JSON)."""
        text = json.dumps(document, allow_nan=False)
        _atomic_write(self.preview_path, lambda f: f.write(text.encode()))

    def create(self, config: RunConfig) -> None:
        self.check_creatable()
        self.path.mkdir(parents=True, exist_ok=True)
        document = {"format": RUN_FORMAT, "version": VERSION, "config": config.to_dict(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__}
        _atomic_write(self.config_path, lambda f: f.write(json.dumps(document, indent=2).encode()))
        self.metrics_path.write_text("")

    def check_creatable(self) -> None:
        """Raise :class:`RunError` unless a new run can go here without touching anything else."""
        if self.checkpoint_path.exists():
            raise RunError(f"{self.path} already holds a run; use --resume {self.path} or choose another --out")
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a directory; choose another --out")
        if self.config_path.exists() or self.metrics_path.exists():
            raise RunError(f"{self.path} already holds a {CONFIG_FILE} or {METRICS_FILE} that is not a complete run; "
                           "choose another --out")

    def write_config(self, config: RunConfig) -> None:
        """Replace the stored config (keeping the document's other fields), atomically."""
        document = json.loads(self.config_path.read_text()) if self.config_path.is_file() else {
            "format": RUN_FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__}
        document["config"] = config.to_dict()
        _atomic_write(self.config_path, lambda f: f.write(json.dumps(document, indent=2).encode()))

    def load_config(self) -> RunConfig:
        if not self.path.is_dir():
            raise RunError(f"{self.path} is not a run directory (it does not exist)")
        if not self.config_path.is_file():
            raise RunError(f"{self.path} is not a run directory (no {CONFIG_FILE})")
        try:
            document = json.loads(self.config_path.read_text())
        except OSError as error:
            raise RunError(f"{self.config_path} cannot be read: {error.strerror or error}") from None
        except (ValueError, RecursionError) as error:  # not JSON, not UTF-8, nested beyond reason
            raise RunError(f"{self.config_path} is not valid JSON ({type(error).__name__}); it may be corrupt or truncated") from None
        check_format(self.config_path, document, RUN_FORMAT, "run config")
        for key in ("created", "torch"):  # when and with which torch it was made: text, for people to read
            if key in document and not isinstance(document[key], str):
                raise RunError(f"{self.config_path} is corrupt: its {key!r} must be text, got {shown(document[key])}")
        if not isinstance(document.get("config"), dict):
            raise RunError(f"{self.config_path} is corrupt: its 'config' must be a mapping of sections")
        try:
            return RunConfig.from_dict(document["config"]).validate()
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RunError(f"{self.config_path} is corrupt: {error}") from None

    def save_checkpoint(self, state: dict, config: RunConfig) -> None:
        save_checkpoint(self.checkpoint_path, state, config)

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict:
        return load_checkpoint(self.checkpoint_path, map_location)

    def append_metrics(self, metrics, its_per_second: float) -> None:
        self.append_records([{**metrics.to_dict(), "its_per_second": its_per_second, "time": time.time()}])

    def append_records(self, records: list[dict]) -> None:
        with open(self.metrics_path, "a") as file:
            file.write("".join(json.dumps(record) + "\n" for record in records))

    def read_metrics(self) -> list[dict]:
        """The records of metrics.jsonl; lines that are not records (cut short by a crash or a full
        disk, or edited by hand) are skipped and counted in ``self.skipped``."""
        self.skipped = 0
        if not self.metrics_path.is_file():
            return []
        records = []
        try:
            text = self.metrics_path.read_text(errors="replace")
        except OSError as error:
            raise RunError(f"{self.metrics_path} cannot be read: {error.strerror or error}") from None
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                record = None  # a line cut short by a crash or a full disk
            step = record.get("step") if isinstance(record, dict) else None
            if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
                records.append(record)
            else:
                self.skipped += 1  # anything else is not a record of ours
        return records

    def truncate_metrics(self, step: int) -> int:
        """Drop records past ``step`` (logged after the checkpoint a resume starts from) and the lines
        that are not records; the number of the latter."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        _atomic_write(self.metrics_path, lambda f: f.write(text.encode()))
        return self.skipped


def load_run(path: str | Path, device: str | torch.device = "cpu"):
    """``(config, state)`` of a run directory (or of a bare checkpoint file)."""
    path = Path(path)
    if path.is_file():
        state = load_checkpoint(path, device)
        try:
            return RunConfig.from_dict(json.loads(state["config"])).validate(), state
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as error:
            raise RunError(f"{path} holds an invalid config: {error}") from None
    run = RunDirectory(path)
    config = run.load_config()
    return config, run.load_checkpoint(device)
