"""The rich progress bar of ``maml-tui train``: meta-it/s and the current losses, live."""

from __future__ import annotations

from rich.markup import escape

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """Turns the engine's TrainEvents into a progress bar (or nothing, when quiet)."""

    def __init__(self, console: Console, quiet: bool = False):
        self.quiet = quiet
        self.progress = Progress(
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("{task.fields[losses]}"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
            transient=False,
        )
        self.task = None

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, event) -> None:
        if event.kind == "note":  # said even when quiet, on stderr: stdout is the run directory alone
            Console(stderr=True, soft_wrap=True).print(f"note: {escape(event.message)}", highlight=False)
            return
        if self.quiet:
            return
        if event.kind == "start":
            self.task = self.progress.add_task("meta-training", total=event.total, completed=event.step,
                                               speed="", losses="starting")
            self.progress.console.print(f"run directory: {escape(event.message)}", highlight=False)
        elif event.kind == "log" and self.task is not None:
            m = event.metrics
            self.progress.update(
                self.task, completed=event.step, speed=f"{event.its_per_second:,.0f} it/s",
                losses=f"query {m.query_loss_before:.2f}→{m.query_loss_after:.2f}"
                       + ("" if m.val_accuracy is None else f"  val acc {100 * m.val_accuracy:.1f}%")
                       + "".join(f"  {name.replace('_', ' ')} {value:.2g}" for name, value in m.diagnostics.items()),
            )
        elif event.kind == "end" and self.task is not None:
            self.progress.update(self.task, completed=event.step)
