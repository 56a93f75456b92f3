"""Snapshot tests of the explorer's main screen and help screen at a fixed seed and size.

The engine runs in a thread and opens the shipped checkpoint; the pictures wait for a fixed state
(two inner steps on the first task, and the sharpness indicator about them) and show no timing-dependent text (meta-it/s reads "—" while
paused). Update them with ``python -m pytest tests/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time

from maml_tui.app import ExplorerApp
from maml_tui.engine_link import EngineLink


async def _adapted_twice(pilot) -> None:
    main = pilot.app.main
    deadline = time.monotonic() + 30
    # and the sharpness indicator (sent after the snapshot) about those two steps
    while main.snapshot is None or main.snapshot["inner_steps_taken"] < 2 or (
            main.sharpness is None or main.sharpness["inner_steps_taken"] != 2):
        if main.ready and main.snapshot["inner_steps_taken"] == 0 and not getattr(main, "_pressed", False):
            main._pressed = True
            await pilot.press("i", "i")
        assert time.monotonic() < deadline, "the engine did not answer"
        await pilot.pause(0.02)
    main.redraw(force=True)
    await pilot.pause()


def _app() -> ExplorerApp:
    return ExplorerApp(EngineLink(mode="thread", device="cpu"))


def test_main_screen(snap_compare):
    assert snap_compare(_app(), terminal_size=(100, 30), run_before=_adapted_twice)


def test_main_screen_at_the_minimum_size(snap_compare):
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=_adapted_twice)


def test_main_screen_large(snap_compare):
    assert snap_compare(_app(), terminal_size=(160, 48), run_before=_adapted_twice)


def test_main_screen_in_ascii_at_the_minimum_size(snap_compare):
    app = ExplorerApp(EngineLink(mode="thread", device="cpu"), ascii_mode=True)
    assert snap_compare(app, terminal_size=(80, 24), run_before=_adapted_twice)


def test_help_screen(snap_compare):
    async def open_help(pilot) -> None:
        await _adapted_twice(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(100, 30), run_before=open_help)
