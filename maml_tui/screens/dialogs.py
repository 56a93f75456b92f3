"""Small modal dialogs: a yes/no question before throwing training away, save/discard/cancel before
quitting with unsaved training, and a run-directory path (with completion and the recent runs)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def complete_path(value: str) -> str | None:
    """The path ``value`` completes to on this file system, like a shell's tab: the first entry whose
    name starts with what was typed (run directories first, then other directories, then checkpoint
    files), directories with a trailing slash; None when nothing matches."""
    if not value:
        return None
    typed = os.path.expanduser(value)
    folder, prefix = os.path.split(typed)
    try:
        entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
    except OSError:
        return None
    matches = []
    for entry in entries:
        if not entry.name.startswith(prefix) or (entry.name.startswith(".") and not prefix.startswith(".")):
            continue
        try:
            directory = entry.is_dir()
        except OSError:
            continue
        if not directory and not entry.name.endswith((".pt", ".json")):
            continue
        rank = 0 if directory and is_run(Path(entry.path)) else (1 if directory else 2)
        matches.append((entry.name != prefix, rank, entry.name, directory))
    if not matches:
        return None
    _, _, name, directory = min(matches)
    completed = value[: len(value) - len(prefix)] + name + ("/" if directory else "")
    return completed if completed != value else None


class PathSuggester(Suggester):
    """Completion from the file system (not cached: runs appear while the explorer is open)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value)


class ChoiceDialog(ModalScreen):
    """A question with a few answers, each a button and a key; dismisses with the chosen answer."""

    CHOICES: tuple[tuple[str, str, str, object], ...] = ()  # (button id, label, variant, answer)

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="question")
            with Horizontal(classes="buttons"):
                for button, label, variant, _ in self.CHOICES:
                    yield Button(label, variant=variant, id=button)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(next(answer for button, _, _, answer in self.CHOICES if button == event.button.id))

    def action_answer(self, answer) -> None:
        self.dismiss(answer)


class ConfirmDialog(ChoiceDialog):
    """Ask a yes/no question; dismisses with True for yes."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    CHOICES = (("yes", "Yes (y)", "error", True), ("no", "No (n)", "primary", False))


class QuitDialog(ChoiceDialog):
    """Quitting with unsaved training: dismisses with "save", "discard" or "cancel"."""

    BINDINGS = [Binding("s", "answer('save')", "Save"), Binding("d", "answer('discard')", "Discard"),
                Binding("c,escape", "answer('cancel')", "Cancel")]
    CHOICES = (("save", "Save (s)", "primary", "save"), ("discard", "Discard (d)", "error", "discard"),
               ("cancel", "Cancel (c)", "default", "cancel"))


class PathDialog(ModalScreen[str | None]):
    """Ask for a run directory; dismisses with the path, or None when cancelled. The input completes
    paths (tab or right arrow takes the grey suggestion) and the recent runs are listed below it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("tab", "complete", "Complete", priority=True)]

    def __init__(self, title: str, value: str = "", recent: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.recent = [path for path in recent if path]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="question")
            yield Input(self.value, placeholder="run directory", id="path", suggester=PathSuggester())
            if self.recent:
                yield Label("recent runs (↓ to pick):", classes="hint")
                yield OptionList(*[Option(Text(path), id=str(index)) for index, path in enumerate(self.recent)], id="recent")
            yield Label("tab: complete · enter: ok · escape: cancel", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()

    def action_complete(self) -> None:
        field = self.query_one("#path", Input)
        if self.focused is field:
            suggestion = complete_path(field.value)
            if suggestion:
                field.value = suggestion
                field.cursor_position = len(suggestion)
                return
        self.focus_next()

    def on_key(self, event) -> None:
        if event.key == "down" and self.recent and self.focused is self.query_one("#path", Input):
            self.query_one("#recent", OptionList).focus()
            event.stop()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.recent[int(event.option.id)])

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self.focused is event.option_list:  # moving through the list shows the path in the input
            self.query_one("#path", Input).value = self.recent[int(event.option.id)]

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
