"""Textual messages that carry the engine's events into the app.

The engine link's reader thread posts them (``post_message`` is thread-safe); the main screen
handles them on the UI thread. Events stay the plain dicts the engine sent.
"""

from __future__ import annotations

from textual.message import Message


class EngineEvents(Message):
    """A batch of engine events, oldest first, with stale snapshots already dropped."""

    def __init__(self, events: list[dict]) -> None:
        super().__init__()
        self.events = events


class EngineDied(Message):
    """The engine process ended without saying goodbye."""

    def __init__(self, exit_code: int | None) -> None:
        super().__init__()
        self.exit_code = exit_code
