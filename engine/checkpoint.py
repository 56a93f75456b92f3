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
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig
from engine.errors import MamlTuiError

FORMAT = "maml-tui-checkpoint"
RUN_FORMAT = "maml-tui-run"
VERSION = 1
CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.json", "metrics.jsonl", "checkpoint.pt"
PREVIEW_FILE = "preview.json"  # what the explorer shows when it opens the run (plain JSON, see engine.explorer)


class RunError(MamlTuiError, ValueError):
    """A run directory or checkpoint that cannot be used; the message is one clear sentence."""


LOCK_FILE = ".lock"  # held (flock) by the one process writing the run; it names that process


class RunLock:
    """One writer per run directory: an exclusive ``flock`` on ``<run>/.lock``, held for as long as a
    process writes the run (``train``, ``--resume``, an explorer save) and released on any exit, a
    crash or ``kill -9`` included (the kernel drops it), so a stale lock cannot block anyone. A
    second writer is refused with one sentence naming the first. Whoever takes the lock removes the
    temporary files an interrupted save left behind (no writer can be mid-save then)."""

    def __init__(self, path: str | Path, what: str = "a writer"):
        self.path = Path(path)
        self.what = what
        self.handle = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunError(f"{self.path} is being written by {holder}; wait for it to finish (or stop it) "
                           "and try again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} ({self.what})")
        handle.flush()
        self.handle = handle
        remove_temporary_files(self.path)
        return self

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing drops the flock; the file stays (its text is only a hint)
            self.handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_temporary_files(path: Path) -> list[Path]:
    """Remove what interrupted atomic writes left in a run directory (``.<name>.*.tmp``)."""
    removed = []
    for leftover in path.glob(".*.tmp"):
        try:
            leftover.unlink()
            removed.append(leftover)
        except OSError:
            pass
    return removed


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
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated, corrupt or not a torch file at all
        raise RunError(f"{path} is not a readable checkpoint ({type(error).__name__}); it may be corrupt or truncated") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"{path} is not a maml-tui checkpoint")
    if state.get("version", 0) > VERSION:
        raise RunError(f"{path} was written by a newer maml-tui (format version {state['version']})")
    for key in ("step", "params", "config"):
        if key not in state:
            raise RunError(f"{path} is incomplete: it has no {key!r}")
    bad = [n for n, v in state["params"].items() if not torch.is_tensor(v) or not torch.isfinite(v).all()]
    if bad:
        raise RunError(f"{path} holds non-finite or invalid parameters ({bad[0]})")
    return state


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
            return RunConfig.from_dict(document["config"]).validate()
        except (ValueError, KeyError, TypeError) as error:
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
        if not self.metrics_path.is_file():
            return []
        records = []
        for line in self.metrics_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a line cut short by a crash or a full disk
            if isinstance(record, dict) and isinstance(record.get("step", 0), int) and not isinstance(record.get("step", 0), bool):
                records.append(record)  # anything else is not a record of ours: skipped
        return records

    def truncate_metrics(self, step: int) -> None:
        """Drop records past ``step`` (logged after the checkpoint a resume starts from)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        _atomic_write(self.metrics_path, lambda f: f.write(text.encode()))


def load_run(path: str | Path, device: str | torch.device = "cpu"):
    """``(config, state)`` of a run directory (or of a bare checkpoint file)."""
    path = Path(path)
    if path.is_file():
        state = load_checkpoint(path, device)
        try:
            return RunConfig.from_dict(json.loads(state["config"])).validate(), state
        except (ValueError, TypeError) as error:
            raise RunError(f"{path} holds an invalid config: {error}") from None
    run = RunDirectory(path)
    config = run.load_config()
    return config, run.load_checkpoint(device)
