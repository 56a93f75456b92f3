"""The messages screen (key ``N``): every message since launch, in full, newest first.

The status line has room for one line; a long reason (why a run could not be opened, why
training paused) is cut there, and a toast goes away. Here each one stays, with its time and
severity, wrapped to the screen's width.
"""

from __future__ import annotations

import time

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

MARKS = {"error": "[b $error]error[/]", "warning": "[b $warning]warning[/]", "information": "[b]note[/]"}


class MessagesScreen(Screen[None]):
    """Every message of this session; escape, N or q closes it."""

    BINDINGS = [Binding("escape,N,q", "close", "Close")]

    def __init__(self, messages: list[tuple[float, str, str]]) -> None:
        super().__init__()
        self.messages = list(messages)

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="messages"):
            yield Static("[dim]escape, N or q closes this list; newest first[/]", classes="hint")
            if not self.messages:
                yield Static("no messages since launch", id="message-list")
                return
            lines = [f"{time.strftime('%H:%M:%S', time.localtime(when))}  {MARKS.get(severity, '')}  {escape(text)}"
                     for when, severity, text in reversed(self.messages)]
            yield Static("\n".join(lines), id="message-list")

    def action_close(self) -> None:
        self.dismiss(None)
