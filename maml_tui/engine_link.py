"""The UI's end of the engine protocol: start the engine, send it commands, hand its events to the app.

:class:`EngineLink` starts :func:`engine.explorer_server.serve` in a separate process (``spawn``,
so the child is a clean interpreter that imports torch on its own while the UI paints its first
frame) or, for fast tests, in a thread of this process; both speak the same protocol. A reader
thread collects events, drops snapshots that a newer one has already replaced, and posts them to
the app as one :class:`~maml_tui.messages.EngineEvents` message; when the engine process dies
without saying goodbye it posts :class:`~maml_tui.messages.EngineDied`. This module imports
neither torch nor the engine, so the UI process stays light.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable

from maml_tui.launch import SHIPPED_RUN  # a meta-trained sinusoid MAML run: maml-tui train --out maml_tui/data/sinusoid-maml
from maml_tui.paths import claim_autosave_dir


def _engine_main(commands, events, options: dict[str, Any]) -> None:
    """The engine process's entry point (importable without torch in the parent)."""
    from engine.explorer_server import serve

    serve(commands, events, **options)


class EngineLink:
    """Owns the engine (process or thread) and the two queues between it and the UI."""

    def __init__(self, run: str | Path | None = None, device: str = "auto", mode: str = "process",
                 fresh: bool = False, snapshot_rate: float = 4.0, autosave: str | Path | None = None,
                 restore: bool = False):
        """``run`` defaults to the shipped checkpoint; ``fresh`` starts a new random model instead.
        ``autosave`` is where the engine keeps the current model safe (default: the user's state
        directory); with ``restore`` it opens that autosave instead of ``run``."""
        if mode not in ("process", "thread"):
            raise ValueError(f"unknown engine mode {mode!r}")
        self.mode = mode
        self.fresh = fresh
        self.autosave_lock = None  # held while this explorer may write its autosave directory
        if autosave is None:
            autosave, self.autosave_lock = claim_autosave_dir()
        autosave = Path(autosave)
        run = autosave if restore else (None if fresh else (SHIPPED_RUN if run is None else run))
        self.options = {"run": None if run is None else str(run), "device": device, "snapshot_rate": snapshot_rate,
                        "autosave": str(autosave), "restore": restore}
        self.process = None
        self.thread: threading.Thread | None = None
        self.reader: threading.Thread | None = None
        self.closed = threading.Event()
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine. Call before ``App.run()``: Textual replaces stderr, which spawn uses."""
        if self.started:
            return
        self.started = True
        if self.mode == "process":
            context = multiprocessing.get_context("spawn")
            self.commands, self.events = context.Queue(), context.Queue()
            options = {**self.options, "quiet": True, "parent_pid": os.getpid()}
            self.process = context.Process(target=_engine_main, args=(self.commands, self.events, options),
                                           name="maml-tui-engine", daemon=True)
            self.process.start()
        else:
            from engine.explorer_server import serve

            self.commands, self.events = queue.Queue(), queue.Queue()
            self.thread = threading.Thread(target=serve, args=(self.commands, self.events), kwargs=self.options,
                                           name="maml-tui-engine", daemon=True)
            self.thread.start()

    def restarted(self, restore: bool) -> "EngineLink":
        """A new link for a restart: onto the autosave when ``restore`` (this engine wrote one, so
        nothing trained is lost), otherwise onto the same run."""
        autosave = Path(self.options["autosave"])
        restore = restore and (autosave / "checkpoint.pt").is_file()
        link = EngineLink(None if restore else self.options["run"], self.options["device"], self.mode,
                          self.fresh and not restore, self.options["snapshot_rate"], autosave, restore)
        link.autosave_lock, self.autosave_lock = self.autosave_lock, None  # the same directory, still ours
        return link

    def attach(self, deliver: Callable[[list[dict]], None], died: Callable[[int | None], None]) -> None:
        """Start delivering events: ``deliver(events)`` in batches, ``died(exit_code)`` once."""
        self.reader = threading.Thread(target=self._read, args=(deliver, died), name="maml-tui-events", daemon=True)
        self.reader.start()

    def send(self, name: str, **arguments: Any) -> None:
        if self.started and not self.closed.is_set():
            self.commands.put((name, arguments))

    @property
    def alive(self) -> bool:
        if self.process is not None:
            return self.process.is_alive()
        return self.thread is not None and self.thread.is_alive()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the engine to quit, then make sure it has."""
        if not self.started:
            return
        if not self.closed.is_set():
            try:
                self.commands.put(("quit", {}))
            except (OSError, ValueError):
                pass
        self.closed.set()
        if self.process is not None:
            self.process.join(timeout)
            if self.process.is_alive():
                self.process.terminate()
                self.process.join(1.0)
            for channel in (self.commands, self.events):
                channel.cancel_join_thread()
                channel.close()
        elif self.thread is not None:
            self.thread.join(timeout)
        if self.reader is not None and self.reader is not threading.current_thread():
            self.reader.join(1.0)

    # -- the reader thread ----------------------------------------------------------------------
    def _read(self, deliver, died) -> None:
        while not self.closed.is_set():
            try:
                first = self.events.get(timeout=0.2)
            except queue.Empty:
                if not self.alive and not self.closed.is_set():
                    self.closed.set()
                    died(self.process.exitcode if self.process is not None else None)
                    return
                continue
            except (EOFError, OSError, ValueError):
                return
            batch = [first]
            while True:
                try:
                    batch.append(self.events.get_nowait())
                except (queue.Empty, EOFError, OSError, ValueError):
                    break
            deliver(_coalesce(batch))
            if any(event.get("kind") == "closed" for event in batch):
                self.closed.set()
                return


def _coalesce(batch: list[dict]) -> list[dict]:
    """Keep every event except snapshots that a later snapshot replaces."""
    last = max((i for i, e in enumerate(batch) if e.get("kind") == "snapshot"), default=-1)
    return [e for i, e in enumerate(batch) if e.get("kind") != "snapshot" or i == last]
