"""One writer per run directory, without torch: the explorer's interface process takes the same lock
on its autosave directory as ``maml-tui train`` takes on a run (``engine.checkpoint`` re-exports it)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import RunError


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
