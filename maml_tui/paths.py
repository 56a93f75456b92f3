"""Where the explorer keeps its own files: the automatic checkpoint (state) and the preferences (config).

``MAML_TUI_STATE_DIR`` and ``MAML_TUI_CONFIG_DIR`` override the places (the tests point them at
temporary directories); otherwise they are ``$XDG_STATE_HOME/maml-tui`` (or ``~/.local/state/maml-tui``)
and ``$XDG_CONFIG_HOME/maml-tui`` (or ``~/.config/maml-tui``).
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    override = os.environ.get("MAML_TUI_STATE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "maml-tui"


def autosave_dir() -> Path:
    """The current model of the last explorer that trained, kept safe (a run directory)."""
    return state_dir() / "autosave"


def config_dir() -> Path:
    override = os.environ.get("MAML_TUI_CONFIG_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "maml-tui"
