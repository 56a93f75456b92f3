"""The keys bar: the keys that matter in the current state, as many as the width holds.

Textual's footer shows every binding marked for it, always, and at 80 columns cuts the rest off
(the compare, baseline, save, open and palette keys were never visible). This bar knows the
explorer's state (engine starting, ready, training, no model open, engine down) and lists the
keys that do something in it, most useful first, in full words when they fit and short ones when
they do not; a key can be clicked.
"""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static

# (key shown, action, label, short label): most important first; "?" and "q" always fit
READY = [("space", "toggle_run", "run", "run"), ("i", "inner_step", "inner step", "step"),
         ("n", "new_task", "new task", "task"), ("o", "outer_step", "outer step", "outer"),
         ("r", "reset_adaptation", "reset", "reset"), ("c", "cycle_compare", "compare", "cmp"),
         ("p", "toggle_baseline", "baseline", "base"), ("s", "save", "save", "save"), ("l", "open_run", "open", "open"),
         ("P", "open_baseline", "open baseline", "base run"),
         ("t", "batch_view", "meta-batch", "batch"), ("a", "algorithm_view", "algorithm", "algo"),
         ("g", "gradient_view", "meta-gradient", "grad"), ("b", "outer_burst", "burst", "burst"),
         ("m", "new_model", "new model", "new"), ("N", "messages", "messages", "msgs"),
         ("^p", "app.command_palette", "palette", "cmds")]
RUNNING = [("space", "toggle_run", "pause", "pause"), *[k for k in READY[1:] if k[1] != "toggle_run"]]
NO_MODEL = [("l", "open_run", "open a run", "open"), ("m", "new_model", "new model", "new"),
            ("R", "restart_engine", "restart engine", "restart"), ("N", "messages", "messages", "msgs"),
            ("^p", "app.command_palette", "palette", "cmds")]
DOWN = [("R", "restart_engine", "restart engine", "restart"), ("N", "messages", "messages", "msgs"),
        ("^p", "app.command_palette", "palette", "cmds")]
STARTING = [("N", "messages", "messages", "msgs"), ("^p", "app.command_palette", "palette", "cmds")]
ALWAYS = [("?", "help", "help", "help"), ("q", "quit", "quit", "quit")]
STATES = {"ready": READY, "running": RUNNING, "no model": NO_MODEL, "down": DOWN, "starting": STARTING}


def _markup(key: str, action: str, label: str) -> str:
    target = action if action.startswith("app.") else f"screen.{action}"
    return f"[@click={target}][b $accent]{escape(key)}[/] {escape(label)}[/]"


def keys_line(state: str, width: int) -> tuple[str, list[str]]:
    """Markup for the keys of ``state`` in at most ``width`` cells: as many keys as fit in short
    words (the most useful first), then full words for as many of them as still fit."""
    keys = STATES[state]
    cells = lambda entries: sum(len(key) + len(label) + 2 for key, _, label in entries)  # noqa: E731
    for count in range(len(keys), -1, -1):
        chosen = keys[:count] + ALWAYS
        labels = [short for _, _, _, short in chosen]
        if count and cells([(k, a, l) for (k, a, _, _), l in zip(chosen, labels)]) > width:
            continue
        for index, (_, _, full, _) in enumerate(chosen):  # full words, from the front, while they fit
            trial = labels[:index] + [full] + labels[index + 1:]
            if cells([(k, a, l) for (k, a, _, _), l in zip(chosen, trial)]) <= width:
                labels = trial
        entries = [(key, action, label) for (key, action, _, _), label in zip(chosen, labels)]
        return " ".join(_markup(*entry) for entry in entries), [key for key, _, _ in entries]
    return "", []


class KeysBar(Static):
    """One line of keys for the current state; ``show`` redraws only when the state or width changes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=True)
        self.state = ""
        self.shown: list[str] = []
        self._key: tuple | None = None

    def show(self, state: str) -> None:
        width = self.size.width or 80
        if (state, width) == self._key:
            return
        self._key = (state, width)
        self.state = state
        line, self.shown = keys_line(state, width - 1)
        self.update(line, layout=False)

    def on_resize(self) -> None:
        if self.state:
            self._key = None
            self.show(self.state)
