"""What the explorer remembers between launches: the theme, the compare and baseline choices, the
recent runs and the last paths typed into the save and open dialogs.

One small JSON file in the user's config directory (``MAML_TUI_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/maml-tui``, else ``~/.config/maml-tui``), written atomically. A file that cannot be
read is set aside as ``preferences.json.bad`` (never silently overwritten) and the defaults are used;
the explorer says so once.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from maml_tui.paths import config_dir

FORMAT = "maml-tui-preferences"
RECENT = 8  # recent runs kept


@dataclass
class Preferences:
    theme: str | None = None  # a Textual theme name
    compare: str | None = None  # the algorithm last compared against (None: off)
    baseline: bool = False  # the pretrained baseline was on
    recent_runs: list[str] = field(default_factory=list)  # newest first
    last_save: str | None = None  # the directory the last save went into
    last_open: str | None = None

    def remember_run(self, path: str | Path) -> None:
        text = str(path)
        self.recent_runs = [text, *[p for p in self.recent_runs if p != text]][:RECENT]


def preferences_path() -> Path:
    return config_dir() / "preferences.json"


def _valid(document) -> dict:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("it is not a maml-tui preferences file")
    values = {}
    for f in fields(Preferences):
        if f.name not in document or document[f.name] is None:
            continue
        value = document[f.name]
        if f.name == "recent_runs":
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ValueError("recent_runs is not a list of paths")
            value = value[:RECENT]
        elif f.name == "baseline":
            if not isinstance(value, bool):
                raise ValueError("baseline is not true or false")
        elif not isinstance(value, str):
            raise ValueError(f"{f.name} is not text")
        values[f.name] = value
    return values


def load_preferences() -> tuple[Preferences, str]:
    """The saved preferences (defaults when there are none) and a sentence when the file was bad."""
    path = preferences_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Preferences(), ""
    except OSError as error:
        return Preferences(), f"could not read the preferences ({error.strerror}); using the defaults"
    try:
        return Preferences(**_valid(json.loads(text))), ""
    except ValueError as error:
        aside = path.with_name(path.name + ".bad")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        return Preferences(), f"the preferences file was unreadable ({error}); kept it as {aside} and used the defaults"


def save_preferences(preferences: Preferences) -> str:
    """Write atomically; returns "" or a sentence saying why it could not."""
    path = preferences_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"format": FORMAT, "version": 1, **asdict(preferences)}, indent=1) + "\n")
        os.replace(temporary, path)
    except OSError as error:
        return f"could not save the preferences to {path} ({error.strerror})"
    return ""
