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


AUTOSAVE_SLOTS = 8  # explorers open at once that each get an autosave directory of their own


def claim_autosave_dir():
    """``(directory, lock)``: the autosave directory this explorer alone writes. The first free of
    ``autosave``, ``autosave-2`` ... is locked (the lock of ``maml-tui train``, held until this process
    ends; a crashed explorer's lock is gone with it), so two explorers open at once never write into
    one another's autosave. Taking the lock also removes what an interrupted autosave left behind."""
    from engine.runlock import RunLock  # torch-free
    from engine.errors import RunError

    for slot in range(1, AUTOSAVE_SLOTS + 1):
        path = autosave_dir() if slot == 1 else state_dir() / f"autosave-{slot}"
        try:
            return path, RunLock(path, "a maml-tui explorer").acquire()
        except (RunError, OSError):
            continue
    return state_dir() / f"autosave-{os.getpid()}", None


def config_dir() -> Path:
    override = os.environ.get("MAML_TUI_CONFIG_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "maml-tui"
