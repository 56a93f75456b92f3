"""The help screen: every key of the main screen with what it does, built from its bindings."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

INTRO = ("[b]maml-tui explorer[/b]: θ (drawn ·) is the meta-learned start; each inner step adapts it to the "
         "support points (o) of the current task, giving θ′ (•, the latest step on top; older steps fade). Query "
         "points (x) measure the fit; the truth is the line (- in --ascii). Outer steps improve θ across many tasks "
         "at once (t shows a few of them). Every series has its own glyph as well as its colour; the legends name them.")
EPISODES = ("[b]On a classification family[/b] (digits, omniglot) the picture is an episode: the support images "
            "with their labels, and query images with a bar per label, the predicted probability at θ and at θ′ "
            "(the true label in bold); beside it, the query accuracy after each inner step, with chance dotted. "
            "u draws episodes from the unseen meta-test classes (and back); the ways picker sets N.")
OUTRO = ("Pick settings in the left panel (mouse or tab) or from the command palette (ctrl+p), which lists every "
         "action and setting, and themes. Changing the algorithm or the model asks before it starts a new model.")


def key_rows(bindings) -> list[tuple[str, str]]:
    """(keys, explanation) for each binding that has a description."""
    rows = []
    for binding in bindings:
        if not binding.description:
            continue
        keys = binding.key_display or binding.key.replace("question_mark", "?")
        rows.append((keys, binding.tooltip or binding.description))
    return rows


class HelpScreen(Screen[None]):
    """Keys and a short explanation of the picture; any of escape, ? or q closes it.

    A full screen rather than a modal: a modal would redraw every plot beneath it, dimmed.
    """

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, bindings) -> None:
        super().__init__()
        self.rows = key_rows(bindings)

    def compose(self) -> ComposeResult:
        width = max(len(keys) for keys, _ in self.rows)
        with VerticalScroll(classes="dialog", id="help"):
            yield Static("[dim]escape, ? or q closes this help[/]", classes="hint")
            yield Static(INTRO, classes="intro")
            yield Static(EPISODES, classes="intro")
            with Vertical(id="keys"):
                for keys, text in self.rows:  # a key and its text side by side: a wrapped line keeps its indent
                    with Horizontal(classes="help-row"):
                        yield Static(f"[b $accent]{escape(keys):>{width}}[/]", classes="help-key")
                        yield Static(escape(text), classes="help-text")
            yield Static(OUTRO, classes="intro")

    def action_close(self) -> None:
        self.dismiss(None)
