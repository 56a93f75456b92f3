"""The command's entry point: a plain first frame at once for the explorer, the CLI otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from maml_tui.launch import SHIPPED_RUN, explorer_target, frame


def test_which_arguments_open_the_explorer(tmp_path: Path):
    assert explorer_target([]) == SHIPPED_RUN
    assert explorer_target(["--ascii", "--device", "cpu"]) == SHIPPED_RUN
    assert explorer_target(["explore", str(tmp_path)]) == tmp_path
    assert explorer_target(["explore", str(tmp_path / "missing")]) is False  # the CLI says so, on a clean screen
    assert explorer_target(["train"]) is False and explorer_target(["--help"]) is False


def test_the_first_frame_shows_the_runs_own_settings_and_step():
    text = frame(SHIPPED_RUN, 80, 24)
    for words in ("settings", "sinusoid", "maml", "40,40", "0.001", "step 70,000", "starting engine"):
        assert words in text, words
    assert text.startswith("\x1b[?1049h")  # the alternate screen, which Textual then takes over
    assert text.count("\r\n") == 23
    plain = text.split("\x1b[2J", 1)[1]
    assert all(len(row) <= 80 for row in plain.split("\r\n"))
    assert "starting the" in plain and "interface and the engine…" in plain  # wrapped, not cut at 80 columns


def test_the_cli_still_answers_through_the_entry_point():
    done = subprocess.run([sys.executable, "-m", "maml_tui", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "train" in done.stdout and "\x1b[?1049h" not in done.stdout
