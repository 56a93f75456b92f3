"""Where the explorer keeps its own files: the automatic checkpoint and the preferences.

``MAML_TUI_STATE_DIR`` overrides the place (the tests point it at a temporary directory);
otherwise it is ``$XDG_STATE_HOME/maml-tui``, or ``~/.local/state/maml-tui``.
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
