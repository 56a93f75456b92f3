"""The meta-batch screen (key ``t``): small multiples of a few tasks of the current meta-batch.

The main screen shows one task; an outer step is many at once. Here each small plot is one task of
the meta-batch the last outer step trained on, fitted by the same theta (before) and after the
training's inner steps on its own support points (theta'), with its query MSE before and after,
live while training runs: the meta-update is the average of these tasks' query losses. Space, ``o``
and ``b`` train from here; escape or ``t`` goes back.
"""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import Screen
from textual.widgets import Static

from maml_tui.widgets.plots import TaskPlot, legend_markup, set_border

MOST = 9


def layout_for(width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of small plots that keep each one readable (about 36x9 cells or more)."""
    columns = max(1, min(3, width // 36))
    rows = max(1, min(3, (height - 4) // 9))
    return columns, rows


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "∞"


class BatchScreen(Screen[None]):
    """A live grid of the meta-batch's tasks."""

    BINDINGS = [Binding("escape,t", "close", "Back"), Binding("space", "run", "Run/pause"),
                Binding("o", "outer", "Outer step"), Binding("b", "burst", "Burst"), Binding("q", "close", "Back", show=False)]

    def __init__(self, main, ascii_mode: bool = False, present: bool = False) -> None:
        super().__init__()
        self.main = main
        self.ascii_mode, self.present = ascii_mode, present
        self.shape = (0, 0)

    def compose(self) -> ComposeResult:
        with Vertical(id="batch-screen"):
            yield Static("", id="batch-title")
            yield Grid(id="batch-grid")
            yield Static("", id="batch-legend")
            yield Static("[b]space[/] run/pause  [b]o[/] outer step  [b]b[/] burst  [b]t[/]/[b]escape[/] back", id="batch-keys")

    async def on_mount(self) -> None:
        await self.lay_out()
        self.refresh_view()
        self.set_interval(0.25, self.refresh_view)

    async def on_resize(self) -> None:
        if layout_for(*self.app.size) != self.shape:
            await self.lay_out()
            self.refresh_view()

    async def lay_out(self) -> None:
        columns, rows = self.shape = layout_for(*self.app.size)
        grid = self.query_one("#batch-grid", Grid)
        grid.styles.grid_size_columns, grid.styles.grid_size_rows = columns, rows
        await grid.remove_children()
        await grid.mount_all([TaskPlot(ascii_mode=self.ascii_mode, present=self.present, classes="task-plot")
                              for _ in range(columns * rows)])
        self.main.send("the meta-batch view", "batch_view", count=columns * rows)

    def refresh_view(self) -> None:
        snapshot = self.main.snapshot
        plots = list(self.query(TaskPlot))
        title = self.query_one("#batch-title", Static)
        if snapshot is None or not snapshot.get("batch_tasks"):
            title.update("waiting for the engine's meta-batch…")
            return
        tasks = snapshot["batch_tasks"]
        settings = snapshot["settings"]
        steps = settings["inner_steps"]
        which = (f"the meta-batch of outer step {snapshot['step']:,}" if snapshot.get("batch_source") == "last"
                 else "a meta-batch like the next one (no outer step yet)")
        title.update(f"[b]{len(tasks)} of {settings['meta_batch_size']} tasks[/b] of {which} · each adapts the same θ "
                     f"with {steps} inner step{'s' if steps != 1 else ''} on its {settings['shots']} support points; "
                     "the outer step averages their query losses")
        for plot, task in zip(plots, tasks):
            plot.show_task(snapshot["grid_x"], task)
            set_border(plot, title=f"MSE {_number(task['loss_before'])} → {_number(task['loss_after'])}")
        for plot in plots[len(tasks):]:
            plot.placeholder("")
        look = plots[0].look if plots else None
        if look is not None:
            after = f"θ′ after {steps} step{'s' if steps != 1 else ''}"
            self.query_one("#batch-legend", Static).update(legend_markup(
                look, [("truth", "truth", "truth"), ("support", "support", "sup"), ("theta", "θ (before)", "θ"),
                       ("adapted", after, "θ′")], self.app.size.width - 2))

    def action_run(self) -> None:
        self.main.action_toggle_run()

    def action_outer(self) -> None:
        self.main.action_outer_step()

    def action_burst(self) -> None:
        self.main.action_outer_burst()

    def action_close(self) -> None:
        self.main.send("the meta-batch view", "batch_view", count=0)
        self.dismiss(None)
