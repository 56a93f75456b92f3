"""The engine side of the explorer: a loop that owns an :class:`ExplorerSession` and talks in messages.

:func:`serve` reads commands from one queue and writes events to another, so it runs the same way
in a separate process (what the explorer does, so training and drawing never fight over one
interpreter) and in a thread (what fast tests do). Commands are ``(name, arguments)`` tuples;
events are plain dicts with a ``kind`` ("ready", "snapshot", "records", "error", "diverged",
"saved", "closed") so the UI process never needs to import torch to read them. While meta-training
runs, the loop steps in chunks of about 20 ms, checks the command queue between chunks, and sends
at most ``snapshot_rate`` snapshots a second, plus one right after each command so a key press
is answered at once.
"""

from __future__ import annotations

import gc
import os
import queue
import threading
import time
import traceback
from dataclasses import asdict
from typing import Any

from engine.memory import release_memory

CHUNK_SECONDS = 0.02  # training time between two looks at the command queue
RELEASE_SECONDS = 30.0  # between two returns of freed heap pages to the system (engine.memory)
RECORD_SECONDS = 0.25  # time between two measured (charted and checked) outer steps while training
CURVE_SECONDS = 1.0  # while training, between two snapshots that re-adapt the whole loss-per-inner-step curve
AUTOSAVE_SECONDS = 5.0  # training time between two automatic checkpoints of the current model
MODEL_CHANGES = ("set_settings", "new_model", "load")  # commands after which the autosave is rewritten
NEED_NO_MODEL = ("load", "new_model", "snapshot", "crash", "batch_view", "gradient_view")  # what works while no model is open
GRADIENT_SECONDS = 2.0  # while training, between two meta-gradient comparisons (only while that panel is open)
SHARPNESS_SECONDS = 10.0  # while training, between two sharpness measurements (idle: on every change of task or theta)

def serve(commands, events, run: str | None = None, device: str = "auto", snapshot_rate: float = 4.0,
          quiet: bool = False, parent_pid: int | None = None, autosave: str | None = None,
          restore: bool = False) -> None:
    """Run until a ``quit`` command (or the parent process going away); ``run=None`` is a new model.

    ``autosave`` is a directory where the current model is kept safe (every few seconds of
    training and after every change of model); with ``restore`` the engine opens that autosave.
    """
    if quiet:  # a child of a full-screen app must never write to the terminal
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
    Server(commands, events, run, device, snapshot_rate, parent_pid, autosave, restore).loop()


class Server:
    """The command loop; one instance per engine."""

    def __init__(self, commands, events, run, device, snapshot_rate, parent_pid, autosave=None, restore=False):
        self.commands, self.events = commands, events
        self.run, self.device = run, device
        self.autosave_path, self.restore = autosave, restore
        self.autosaved_at = 0.0
        self.released_at = time.perf_counter()
        self.autosaved_step: int | None = None
        self.interval = 1.0 / snapshot_rate
        self.parent_pid = parent_pid
        self.session = None
        self.running = False
        self.steps_left = 0  # a burst in progress
        self.pending: list = []  # records not yet sent
        self.dirty = True
        self.urgent = False
        self.last_sent = 0.0
        self.curve_at = 0.0  # when a snapshot last carried a freshly adapted curve
        self.last_record = 0.0
        self.rate_window: list[tuple[float, int]] = []  # (time, step) for meta-it/s
        self.its_per_second = 0.0
        self.batch_count = 0  # tasks of the meta-batch each snapshot carries (the small multiples, when open)
        self.gradients_open = False  # the meta-gradient panel is open: compare meta-gradients (else nothing is computed)
        self.gradients_key: tuple | None = None  # what the last comparison was about
        self.gradients_at = 0.0
        self.sharpness_key: tuple | None = None  # what the last sharpness was about
        self.sharpness_at = 0.0
        self.computed = {"gradients": 0, "sharpness": 0}  # how many of each were computed (tests count them)

    def send(self, kind: str, **data: Any) -> None:
        self.events.put({"kind": kind, **data})

    # -- the loop -------------------------------------------------------------------------------
    def loop(self) -> None:
        try:
            import torch

            from engine.explorer import ExplorerSession, catalog
            from engine.trainer import resolve_device, resolve_threads
            from engine.config import RunConfig

            device = resolve_device(self.device)
            self.send("ready", device=str(device), threads=resolve_threads(None, device, RunConfig()),
                      torch=torch.__version__, catalog=catalog(), device_name=_device_name(device))
        except Exception as error:  # no torch, a bad device: nothing can work
            self.send("error", message=f"the engine could not start: {error}", detail=traceback.format_exc(), fatal=True)
            self.send("closed")
            return
        try:
            if self.restore:
                self.session = ExplorerSession.restore(self.run, self.device)
                self.send("restored", step=self.session.learner.step, source=self.session.source)
            else:
                self.session = ExplorerSession.open(self.run, self.device)
            self.send_records(reset=True)
            self.send_notes()
            self.send_snapshot()
        except Exception as error:  # a corrupt run: the engine stays up, so another can be opened
            what = "the autosave" if self.restore else (self.run or "a new model")
            self.send("error", message=f"could not open {what}: {_sentence(error)}; open another run (l) or start "
                      "a new model (m)", detail=traceback.format_exc(), fatal=False, no_model=True)
        # the first outer step makes the optimizer, which imports torch._dynamo (about two
        # seconds): do that in the background now, while a person looks at the first picture
        threading.Thread(target=_warm_up, name="maml-tui-warm-up", daemon=True).start()
        # torch and the engine are hundreds of thousands of objects that live as long as the
        # process; left in the collector's oldest generation, every full collection walks them all
        # (28 ms at first, 190 ms after a minute of snapshots, measured), a stall several times a
        # minute while training. Frozen, a full collection walks only what was made since.
        gc.collect()
        gc.freeze()
        while True:
            busy = self.running or self.steps_left > 0
            try:
                command = self.commands.get_nowait() if busy else self.commands.get(timeout=0.25)
            except queue.Empty:
                command = None
                if self.parent_pid is not None and os.getppid() != self.parent_pid:
                    return  # the UI is gone; nobody will read our events
            while command is not None:
                if command[0] == "quit":
                    self.send("closed")
                    return
                self.handle(command)
                self.urgent = True  # a person is waiting for this answer: skip the rate limit
                try:
                    command = self.commands.get_nowait()
                except queue.Empty:
                    command = None
            if self.running or self.steps_left > 0:
                self.train_chunk()
            now = time.perf_counter()
            idle = not (self.running or self.steps_left)
            if self.dirty and (idle or self.urgent or now - self.last_sent >= self.interval):
                self.send_snapshot()
            self.send_views(idle)
            if now - self.released_at >= RELEASE_SECONDS:  # a long session's resident size stays flat
                self.released_at = now
                release_memory()

    def handle(self, command: tuple[str, dict]) -> None:
        name, arguments = command[0], (command[1] if len(command) > 1 else {})
        session = self.session
        try:
            if session is None and name not in NEED_NO_MODEL:
                raise ValueError("no model is open: open a run (l) or start a new model (m)")
            if session is None and name in ("load", "new_model"):
                from engine.explorer import ExplorerSession

                if name == "new_model":
                    self.session = ExplorerSession.open(None, self.device)
                else:
                    self.session = ExplorerSession.open(arguments["path"], self.device)
                self.send_records(reset=True)
                self.send_notes()
                self.keep_safe()
                self.dirty = True
                return
            if name == "inner_step":
                session.inner_step()
            elif name == "reset_adaptation":
                session.reset_adaptation()
            elif name == "new_task":
                session.new_task()
            elif name == "outer_steps":
                self.steps_left += int(arguments.get("count", 1))
            elif name == "run":
                self.running = True
                self.rate_window = []
            elif name == "pause":
                self.running, self.steps_left = False, 0
                self.keep_safe(changed=False)
            elif name == "set_settings":
                session.set_settings(arguments["changes"])
                self.send_records(reset=True)
            elif name == "new_model":
                session.new_model()
                self.send_records(reset=True)
            elif name == "episode_split":
                session.set_episode_split(arguments["split"])
            elif name == "set_companion":
                session.set_companion(arguments["role"], arguments.get("algorithm"))
            elif name == "save":
                path = session.save(arguments["path"])
                self.send("saved", path=str(path), step=session.learner.step)
            elif name == "load":
                session.load(arguments["path"], arguments.get("role", "main"))
                if arguments.get("role", "main") == "main":
                    self.send_records(reset=True)
                    self.send_notes()
            elif name == "batch_view":  # the small multiples: how many tasks of the meta-batch to send (0: none)
                self.batch_count = max(0, min(int(arguments.get("count", 0)), 12))
            elif name == "gradient_view":  # the meta-gradient panel opened (True) or closed (False)
                self.gradients_open = bool(arguments.get("open", False))
                self.gradients_key = None  # on opening: compare at once
            elif name == "snapshot":
                pass
            elif name == "crash":  # a test hook: the engine process dies without a word
                os._exit(int(arguments.get("code", 3)))
            else:
                raise ValueError(f"unknown engine command {name!r}")
            if name in MODEL_CHANGES:
                self.keep_safe()
        except Exception as error:
            self.running, self.steps_left = False, 0
            self.send("error", message=_sentence(error), detail=traceback.format_exc(), fatal=False)
        self.dirty = True

    def train_chunk(self) -> None:
        from engine.trainer import DivergedError

        count = self.steps_left if self.steps_left > 0 and not self.running else 1_000_000
        try:
            before = self.session.learner.step
            now = time.perf_counter()
            # bursts measure every chunk; live training measures every RECORD_SECONDS and runs bare between
            record = not self.running or now - self.last_record >= RECORD_SECONDS
            records = self.session.outer_steps(count, seconds=CHUNK_SECONDS, record=record)
            if record:
                self.last_record = now
            done = self.session.learner.step - before
            if not self.running:
                self.steps_left = max(0, self.steps_left - done)
            self.pending.extend(records)
            self.measure_rate()
            stopped = not self.running and self.steps_left == 0  # a burst just ended
            if stopped or time.perf_counter() - self.autosaved_at >= AUTOSAVE_SECONDS:
                self.keep_safe(changed=False)
        except DivergedError as error:
            self.running, self.steps_left = False, 0
            self.send_records()
            self.send("diverged", message=str(error))
        except Exception as error:
            self.running, self.steps_left = False, 0
            self.send("error", message=_sentence(error), detail=traceback.format_exc(), fatal=False)
        self.dirty = True

    def send_views(self, idle: bool) -> None:
        """After the snapshot (so a key's answer is never held up by them): the sharpness of the
        current task when the task or theta changed, and, while its panel is open, the meta-gradient
        comparison when theta or the meta-batch changed; while training, each at most every
        SHARPNESS_SECONDS / GRADIENT_SECONDS. Nothing runs for a closed panel."""
        session = self.session
        if session is None:
            return
        now = time.perf_counter()
        learner = session.learner
        base = (id(learner), learner.step, tuple(sorted(session.settings.items())))
        key = (*base, session.task_number, session.inner_steps_taken, session.episode_split)
        if key != self.sharpness_key and (idle or now - self.sharpness_at >= SHARPNESS_SECONDS):
            self.sharpness_key, self.sharpness_at = key, now
            self.computed["sharpness"] += 1
            self.send_view("sharpness", session.sharpness_view)
        key = (*base, id(session.last_batch))
        if self.gradients_open and key != self.gradients_key and (idle or now - self.gradients_at >= GRADIENT_SECONDS):
            self.gradients_key, self.gradients_at = key, now
            self.computed["gradients"] += 1
            self.send_view("gradients", session.gradient_view)

    def send_view(self, kind: str, compute) -> None:
        try:
            self.send(kind, view=compute())
        except Exception as error:  # a panel's numbers are never a reason to stop training
            self.send(kind, view={"error": _sentence(error)})

    def keep_safe(self, changed: bool = True) -> None:
        """Autosave the current model (atomically); after training, only if it trained since."""
        self.autosaved_at = time.perf_counter()
        session = self.session
        if self.autosave_path is None or session is None or (not changed and session.learner.step == self.autosaved_step):
            return
        try:
            session.autosave(self.autosave_path)
            self.autosaved_step = session.learner.step
            self.send("autosaved", step=self.autosaved_step, path=str(self.autosave_path))
        except Exception as error:  # never stop training for it, but say so once
            self.send("error", message=f"the automatic checkpoint could not be written: {_sentence(error)}",
                      detail=traceback.format_exc(), fatal=False)
            self.autosave_path = None

    def measure_rate(self) -> None:
        now, step = time.perf_counter(), self.session.learner.step
        self.rate_window.append((now, step))
        while len(self.rate_window) > 2 and now - self.rate_window[0][0] > 2.0:
            self.rate_window.pop(0)
        (first_time, first_step) = self.rate_window[0]
        if now > first_time:
            self.its_per_second = (step - first_step) / (now - first_time)

    # -- events ---------------------------------------------------------------------------------
    def send_notes(self) -> None:
        if self.session is not None:
            for note in self.session.notes:
                self.send("note", message=note)
            self.session.notes = []

    def send_records(self, reset: bool = False) -> None:
        if self.session is not None and self.session.records.thinned:  # the log was thinned: send it whole
            self.session.records.thinned, reset = False, True
        if reset:
            self.pending = []
            self.send("records", records=[asdict(r) for r in self.session.records], reset=True)
        elif self.pending:
            self.send("records", records=[asdict(r) for r in self.pending], reset=False)
            self.pending = []

    def send_snapshot(self) -> None:
        if self.session is None:
            self.dirty = self.urgent = False
            return
        self.send_records()
        busy = self.running or self.steps_left > 0
        self.session.batch_count = self.batch_count
        now = time.perf_counter()
        full = not busy or self.urgent or now - self.curve_at >= CURVE_SECONDS
        if full:
            self.curve_at = now
        self.send("snapshot", snapshot=self.session.snapshot(full_curve=full).to_dict(), running=busy,
                  its_per_second=self.its_per_second if busy else 0.0, memory=device_memory(self.session.learner.device))
        self.dirty = self.urgent = False
        self.last_sent = time.perf_counter()


def _device_name(device) -> str:
    """A GPU's name, for the explorer's status line; the plain device name otherwise."""
    try:
        import torch

        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            return torch.cuda.get_device_name(index)
    except Exception:
        pass
    return str(device)


def device_memory(device) -> tuple[float, float] | None:
    """(GiB this process holds on the accelerator, GiB it has) on a GPU; None on the CPU.

    "Holds" is what PyTorch's caching allocator has reserved: what other programs on the GPU
    cannot use, the number ``nvidia-smi`` shows for this process (less the CUDA context)."""
    try:
        import torch

        if device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
            return torch.cuda.memory_reserved(index) / 2**30, torch.cuda.get_device_properties(index).total_memory / 2**30
        if device.type == "mps":
            return torch.mps.driver_allocated_memory() / 2**30, torch.mps.recommended_max_memory() / 2**30
    except Exception:
        pass
    return None


def _warm_up() -> None:
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # only a head start; the first outer step imports it anyway
        pass


def _sentence(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"
