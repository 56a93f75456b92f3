"""The explorer's Textual App: it owns the engine link and the screens, and nothing else.

:func:`run_explorer` starts the engine process *before* the app runs (Textual replaces stderr,
which multiprocessing's helpers need), then runs the app; the first frame paints while the engine
imports torch in its own process, so neither torch nor the engine is imported here.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.screen import Screen

from maml_tui import textual_fixes  # noqa: F401  (before any widget draws: see the module)
from maml_tui.engine_link import EngineLink
from maml_tui.messages import EngineDied, EngineEvents
from maml_tui.preferences import Preferences, load_preferences, save_preferences
from maml_tui.screens.main import BURST, MainScreen
from maml_tui.widgets import SettingsPanel
from maml_tui.widgets.settings import LABELS


class ExplorerApp(App):
    """The live MAML explorer."""

    CSS_PATH = "app.tcss"
    TITLE = "maml-tui"

    def __init__(self, engine: EngineLink | None = None, ascii_mode: bool = False, present: bool = False) -> None:
        super().__init__()
        self.engine = engine or EngineLink()
        self.engine.start()  # before run(): see the module docstring
        self.ascii_mode = ascii_mode
        self.present = present and not ascii_mode
        self.main: MainScreen | None = None
        self.preferences, self.preferences_problem = load_preferences()

    def on_mount(self) -> None:
        if self.preferences.theme in self.available_themes:
            self.theme = self.preferences.theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self.main = MainScreen(ascii_mode=self.ascii_mode, present=self.present)
        if self.present:
            self.main.add_class("present")
        self.push_screen(self.main)
        if self.preferences_problem:
            self.main.set_message(self.preferences_problem, "warning")
        self._attach()

    def _theme_changed(self, theme) -> None:
        if theme.name != self.preferences.theme:
            self.preferences.theme = theme.name
            self.save_preferences()
        if self.main is not None:
            self.main.theme_changed()

    def save_preferences(self, **changes) -> None:
        """Change some preferences and write them (a failure is a message, never a crash)."""
        for key, value in changes.items():
            setattr(self.preferences, key, value)
        problem = save_preferences(self.preferences)
        if problem and self.main is not None:
            self.main.set_message(problem, "warning")

    def _attach(self) -> None:
        self.engine.attach(lambda events: self.post_message(EngineEvents(events)),
                           lambda code: self.post_message(EngineDied(code)))

    def on_engine_events(self, message: EngineEvents) -> None:
        self.main.apply_events(message.events)

    def on_engine_died(self, message: EngineDied) -> None:
        self.main.engine_died(message.exit_code)

    def restart_engine(self, restore: bool = False) -> bool:
        """A new engine after a crash or a failed start: with ``restore`` it opens the model the last
        engine autosaved, otherwise the same run. True when it restores."""
        old = self.engine
        old.stop(timeout=0.5)
        self.engine = old.restarted(restore)
        self.engine.start()
        self._attach()
        return bool(self.engine.options["restore"])

    async def action_quit(self) -> None:
        self.engine.stop()
        self.exit()

    def on_unmount(self) -> None:
        self.engine.stop(timeout=1.0)  # however the app ends, the engine ends with it

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette lists every action of the main screen and every setting value."""
        yield from super().get_system_commands(screen)
        main = self.main
        if main is None:
            return
        for binding in main.BINDINGS:
            if binding.action in ("quit", "help"):
                continue
            yield SystemCommand(binding.description, f"{binding.tooltip} (key {binding.key_display or binding.key})",
                                partial(main.run_action, binding.action))
        yield SystemCommand("Help", "keys and what the picture shows (key ?)", main.action_help)
        for key, options in main.query_one(SettingsPanel).choices.items():
            for value in options:
                yield SystemCommand(f"{LABELS[key].capitalize()}: {value}", f"set {LABELS[key]} to {value}",
                                    partial(main.pick_setting, key, value))


def run_explorer(run: str | Path | None = None, ascii_mode: bool = False, device: str = "auto", present: bool = False) -> int:
    """Open the explorer (on ``run``, or the shipped sinusoid checkpoint); returns an exit code."""
    engine = EngineLink(run, device)
    app = ExplorerApp(engine, ascii_mode=ascii_mode, present=present)
    try:
        app.run()
    finally:
        engine.stop()
    return app.return_code or 0


__all__ = ["BURST", "ExplorerApp", "Preferences", "run_explorer"]
