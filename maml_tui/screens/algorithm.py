"""The algorithm screen (key ``a``): the current algorithm's learned state, full size and live.

The main screen keeps an algorithm panel beside the plots when the terminal has room; this screen
shows the same tables at any size (80x24 included), updated with every snapshot while training
runs, and closes with escape, ``a`` or ``q``.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from maml_tui.widgets.algorithm import AlgorithmPanel


class AlgorithmScreen(Screen[None]):
    """A live, full-screen algorithm panel."""

    BINDINGS = [Binding("escape,a,q", "close", "Close")]

    def __init__(self, main, ascii_mode: bool = False) -> None:
        super().__init__()
        self.main = main
        self.ascii_mode = ascii_mode

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="algorithm-screen"):
            yield Static("", id="algorithm-title", classes="intro")
            yield AlgorithmPanel(ascii_mode=self.ascii_mode, id="algorithm-full")
            yield Static("[dim]escape, a or q closes this view; training goes on underneath[/]", classes="hint")

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(0.5, self.refresh_view)

    def refresh_view(self) -> None:
        snapshot = self.main.snapshot
        if snapshot is None:
            return
        settings = snapshot["settings"]
        self.query_one("#algorithm-title", Static).update(
            f"[b]{settings['algorithm']}[/b] at outer step {snapshot['step']:,} · {settings['task']} task "
            f"#{snapshot['task_number']}, {snapshot['inner_steps_taken']} inner step(s) taken")
        self.query_one(AlgorithmPanel).show(snapshot.get("algorithm_view", ()), self.main.learned_history())

    def action_close(self) -> None:
        self.dismiss(None)
