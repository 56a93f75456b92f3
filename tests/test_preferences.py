"""Preferences persist between launches (theme, compare and baseline, recent runs, last paths), a
broken file is set aside with one sentence, and the path dialogs complete paths and list recent runs."""

from __future__ import annotations

import json
from pathlib import Path

from maml_tui.engine_link import SHIPPED_RUN
from maml_tui.preferences import RECENT, Preferences, load_preferences, preferences_path, save_preferences
from maml_tui.screens import PathDialog
from maml_tui.screens.dialogs import complete_path
from test_app import make_app, ready, settled, until


def test_preferences_round_trip_and_keep_the_newest_runs_first():
    preferences = Preferences(theme="textual-light", compare="fomaml", baseline=True)
    for index in range(RECENT + 3):
        preferences.remember_run(f"runs/{index}")
    preferences.remember_run("runs/2")
    assert save_preferences(preferences) == ""
    loaded, problem = load_preferences()
    assert problem == "" and loaded == preferences
    assert loaded.recent_runs[0] == "runs/2" and len(loaded.recent_runs) == RECENT
    assert loaded.recent_runs.count("runs/2") == 1
    assert json.loads(preferences_path().read_text())["format"] == "maml-tui-preferences"


def test_a_broken_preferences_file_is_set_aside_not_overwritten():
    path = preferences_path()
    path.parent.mkdir(parents=True)
    for text, reason in (("{ not json", "unreadable"), ('{"format": "maml-tui-preferences", "recent_runs": [1]}', "list of paths")):
        path.write_text(text)
        preferences, problem = load_preferences()
        assert preferences == Preferences() and reason in problem and "defaults" in problem
        assert not path.exists() and path.with_name("preferences.json.bad").read_text() == text


def test_paths_complete_like_a_shell_with_run_directories_first(tmp_path: Path):
    (tmp_path / "runs" / "sine-b").mkdir(parents=True)
    (tmp_path / "runs" / "sine-b" / "config.json").write_text("{}")
    (tmp_path / "runs" / "sine-a").mkdir()  # not a run: ranked after the run directory
    (tmp_path / "runs" / "sine.pt").write_text("")
    (tmp_path / "runs" / "sine.txt").write_text("")  # neither a run nor a checkpoint
    base = str(tmp_path)
    assert complete_path(f"{base}/ru") == f"{base}/runs/"
    assert complete_path(f"{base}/runs/si") == f"{base}/runs/sine-b/"
    assert complete_path(f"{base}/runs/sine.") == f"{base}/runs/sine.pt"
    assert complete_path(f"{base}/runs/sine.t") is None
    assert complete_path(f"{base}/nothing/here") is None and complete_path("") is None


async def test_theme_and_compare_come_back_at_the_next_launch():
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        main = await ready(pilot)
        app.theme = "textual-light"
        await pilot.press("c")
        await settled(pilot, main, lambda s: {c["role"] for c in s["companions"]} == {"compare"}, "a compared algorithm")
        compared = main.compare_algorithm
        await pilot.pause()
    saved, _ = load_preferences()
    assert saved.theme == "textual-light" and saved.compare == compared and str(SHIPPED_RUN) in saved.recent_runs
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        main = await ready(pilot)
        assert app.theme == "textual-light"
        await settled(pilot, main, lambda s: [c["algorithm"] for c in s["companions"]] == [compared], "the compare choice, restored")


async def test_the_open_dialog_offers_recent_runs_and_tab_completes(tmp_path: Path):
    preferences = Preferences(recent_runs=[str(SHIPPED_RUN), str(tmp_path / "gone")])
    save_preferences(preferences)
    (tmp_path / "my-run").mkdir()
    (tmp_path / "my-run" / "config.json").write_text("{}")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        main = await ready(pilot)
        await pilot.press("l")
        dialog = app.screen
        assert isinstance(dialog, PathDialog) and dialog.recent[0] == str(SHIPPED_RUN)
        field = dialog.query_one("#path")
        field.value = f"{tmp_path}/my"
        await pilot.press("tab")
        assert field.value == f"{tmp_path}/my-run/"
        await pilot.press("down")  # into the recent runs
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is main, what="the dialog to close")
        await settled(pilot, main, lambda s: s["source"] == str(SHIPPED_RUN), "the recent run, opened")
    saved = load_preferences()[0]
    assert saved.last_open == str(SHIPPED_RUN) and saved.recent_runs[0] == str(SHIPPED_RUN)
