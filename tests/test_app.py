"""The explorer driven through Pilot: every binding does what its label says.

Most tests run the engine in a thread of the test process (the same protocol, faster to start);
``test_the_real_engine_process_starts_and_a_crash_is_reported`` runs the real engine process.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from rich.text import Text

from textual.widgets import Select

from engine.registry import regression_algorithms
from engine.registry import TASKS as TASK_NAMES
from maml_tui.app import ExplorerApp
from maml_tui.engine_link import EngineLink
from maml_tui.engine_link import SHIPPED_RUN
from maml_tui.screens import AlgorithmScreen, ConfirmDialog, HelpScreen, MainScreen, MessagesScreen, PathDialog, QuitDialog
from maml_tui.widgets import AlgorithmPanel, FitPlot, LossChart, SettingsPanel

SIZE = (100, 30)

ALGORITHM_NAMES = regression_algorithms()  # the explorer draws regression: protonet classifies only


def make_app(**options) -> ExplorerApp:
    ascii_mode = options.pop("ascii_mode", False)
    return ExplorerApp(EngineLink(mode=options.pop("mode", "thread"), device="cpu", **options), ascii_mode=ascii_mode)


async def until(pilot, predicate, timeout: float = 30.0, what: str = "the expected state") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        await pilot.pause(0.02)


async def ready(pilot) -> MainScreen:
    main = pilot.app.main
    await until(pilot, lambda: main is not None and main.ready and main.snapshot is not None, what="the engine's first snapshot")
    main.redraw(force=True)
    await pilot.pause()
    return main


async def settled(pilot, main: MainScreen, predicate, what: str) -> dict:
    await until(pilot, lambda: main.snapshot is not None and predicate(main.snapshot), what=what)
    main.redraw(force=True)
    await pilot.pause()
    return main.snapshot


async def test_inner_step_adapts_the_curve_and_lowers_the_support_loss():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        fit = main.query_one(FitPlot)
        before, draws = main.snapshot, fit.draws
        await pilot.press("i")
        after = await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "one inner step")
        assert after["support_loss"][1] < after["support_loss"][0]
        assert after["predictions"][1] != before["predictions"][0]
        assert fit.draws > draws
        assert "1 step · MSE" in str(fit.border_title) and "→" in str(fit.border_title)
        await pilot.press("i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 2, "two inner steps")
        await pilot.press("r")
        reset = await settled(pilot, main, lambda s: s["inner_steps_taken"] == 0, "a reset adaptation")
        assert reset["predictions"] == before["predictions"]


async def test_new_task_changes_the_task():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        first = main.snapshot
        await pilot.press("n")
        second = await settled(pilot, main, lambda s: s["task_number"] == first["task_number"] + 1, "a new task")
        assert second["task_params"] != first["task_params"]
        assert second["truth"] != first["truth"]


async def test_outer_steps_advance_the_counter_and_add_chart_points():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        chart = main.query_one(LossChart)
        points, draws = len(main.records["step"]), chart.draws
        await pilot.press("o")
        await settled(pilot, main, lambda s: s["step"] == 70_001, "one outer step")
        await until(pilot, lambda: len(main.records["step"]) == points + 1, what="a new chart point")
        main.redraw(force=True)
        assert chart.draws > draws and main.records["step"][-1] == 70_001
        assert "step 70,001" in str(main.query_one("#status").render())
        await pilot.press("b")
        await settled(pilot, main, lambda s: s["step"] == 70_101, "a burst of 100 outer steps")


async def test_space_runs_and_pauses_meta_training():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await pilot.press("space")
        await settled(pilot, main, lambda s: s["step"] > 70_005, "live training")
        assert main.running and "running" in str(main.query_one("#status").render())
        await pilot.press("space")
        await until(pilot, lambda: not main.running, what="the pause")
        await pilot.pause(0.3)
        paused_at = main.snapshot["step"]
        await pilot.pause(0.5)
        assert main.snapshot["step"] == paused_at
        assert "paused" in str(main.query_one("#status").render())


async def test_compare_and_baseline_keys_add_learners_to_the_fit():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await pilot.press("c")
        snapshot = await settled(pilot, main, lambda s: len(s["companions"]) == 1, "a compared algorithm")
        assert snapshot["companions"][0]["role"] == "compare"
        compared = snapshot["companions"][0]["algorithm"]
        assert compared in str(main.query_one(FitPlot).border_subtitle)
        await pilot.press("p")
        await settled(pilot, main, lambda s: {c["role"] for c in s["companions"]} == {"compare", "baseline"}, "the baseline")
        await pilot.press("c")
        await settled(pilot, main, lambda s: any(c["role"] == "compare" and c["algorithm"] != compared for c in s["companions"]),
                      "the next compared algorithm")


async def test_help_screen_opens_and_closes():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = " ".join(str(row.render()) for row in app.screen.query(".help-text"))
        for words in ("inner gradient step", "reset the adaptation", "new task", "meta-update", "run or pause"):
            assert words in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_a_closed_screen_leaves_nothing_of_its_widgets_behind():
    """Each opening of the help screen mounts fresh widgets; once it is closed, their render caches go
    with them. Textual's own StylesCache.get_inner_outer kept every one (textual#6665), which grew the
    interface 0.45 MiB per opening in the memory soak; maml_tui.textual_fixes caches by colour instead."""
    import gc
    import weakref

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        caches = []
        for _ in range(3):
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            await pilot.pause()
            drawn = [widget._styles_cache for widget in app.screen.query("*")]
            assert len(drawn) > 20
            caches += [weakref.ref(cache) for cache in drawn]
            del drawn
            await pilot.press("escape")
            assert isinstance(app.screen, MainScreen)
            await pilot.pause()
        gc.collect()
        kept = sum(ref() is not None for ref in caches)
        assert kept == 0, f"{kept} of {len(caches)} render caches of closed help screens are still held"


def test_the_styles_cache_fix_computes_what_textual_computes():
    from textual._styles_cache import StylesCache
    from textual.color import Color

    from maml_tui import textual_fixes

    assert not textual_fixes.needs_styles_cache_fix() and not textual_fixes.apply()  # applied once, on import
    cache = StylesCache()
    for base, background in [(Color(0, 0, 0), Color(255, 0, 0, 0.5)), (Color(10, 20, 30), Color(0, 0, 0, 0.0)),
                              (Color(200, 200, 200), Color(1, 2, 3))]:
        assert cache.get_inner_outer(base, background) == textual_fixes._original(cache, base, background)
        assert cache.get_inner_outer(base, background) is cache.get_inner_outer(base, background)  # cached
        assert StylesCache().get_inner_outer(base, background) is cache.get_inner_outer(base, background)  # by colour only


async def test_a_terminal_too_small_shows_a_message_and_resizing_restores_the_layout():
    app = make_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await pilot.pause()
        main = app.main
        assert main.has_class("too-small")
        assert main.query_one("#too-small").display and not main.query_one("#body").display
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not main.has_class("too-small") and main.query_one("#body").display


async def test_new_model_asks_first_then_starts_over():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await pilot.press("m")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("m")
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["step"] == 0 and s["source"] == "new model", "a new model")
        assert main.records["step"] == []


async def test_changing_the_algorithm_asks_before_throwing_training_away():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        main.pick_setting("algorithm", "reptile")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["settings"]["algorithm"] == "reptile" and s["step"] == 0, "reptile")
        main.pick_setting("shots", "5")  # keeps training, no question
        await settled(pilot, main, lambda s: s["settings"]["shots"] == 5 and len(s["support_x"]) == 5, "five shots")
        assert str(main.query_one("#setting-shots").value) == "5"


async def test_a_diverging_run_pauses_itself_and_says_why():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        # 1e6 blows up at once; a merely large rate (10) can be tamed by meta-training before the
        # first measured step, which would make this test depend on timing
        app.engine.send("set_settings", changes={"inner_lr": "1e6"})
        await settled(pilot, main, lambda s: s["settings"]["inner_lr"] == 1e6, "the huge inner learning rate")
        await pilot.press("space")
        await until(pilot, lambda: "diverged" in main.message,
                    what=lambda: f"the divergence message (message: {main.message!r}, running: {main.running})")
        assert not main.running
        await pilot.pause(0.3)
        assert main.snapshot["step"] >= 70_000 and "paused" in str(main.query_one("#status").render())


async def test_engine_errors_are_reported_on_screen():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        app.engine.send("set_settings", changes={"meta_batch_size": "0"})
        await until(pilot, lambda: "meta-batch" in main.message, what="the error message")
        assert "meta-batch" in str(main.query_one("#status").render())


async def test_save_and_open_through_the_dialogs(tmp_path: Path):
    app = make_app()
    run = tmp_path / "saved-run"
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await pilot.press("o")
        await settled(pilot, main, lambda s: s["step"] == 70_001, "one outer step")
        await pilot.press("s")
        assert isinstance(app.screen, PathDialog)
        app.screen.query_one("#path").value = str(run)
        await pilot.press("enter")
        await until(pilot, lambda: "saved step 70,001" in main.message, what="the saved message")
        assert (run / "checkpoint.pt").is_file() and (run / "config.json").is_file()
        await pilot.press("m")
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["step"] == 0, "a new model")
        await pilot.press("l")
        app.screen.query_one("#path").value = str(run)
        await pilot.press("enter")
        await settled(pilot, main, lambda s: s["step"] == 70_001 and s["source"] == str(run), "the reopened run")


async def test_q_quits_and_stops_the_engine():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running
    assert not app.engine.alive


async def test_the_palette_lists_every_action_and_setting():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for binding in MainScreen.BINDINGS:
            assert binding.description in titles
        for algorithm in ALGORITHM_NAMES:
            assert f"Algorithm: {algorithm}" in titles
        assert "Theme" in " ".join(titles) or "theme" in " ".join(titles).lower()


async def test_the_panel_offers_what_the_engine_announces():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await until(pilot, lambda: main.ready, what="the engine's catalog")
        panel = main.query_one(SettingsPanel)
        assert panel.choices["task"] == tuple(TASK_NAMES)
        assert panel.choices["algorithm"] == tuple(ALGORITHM_NAMES)
        assert panel.choices["compare"] == ("off", *ALGORITHM_NAMES)
        assert main.query_one("#setting-algorithm", Select).value == "maml"


async def test_every_new_algorithm_can_be_picked_stepped_and_shows_what_it_learns():
    app = make_app()
    async with app.run_test(size=(140, 44)) as pilot:
        main = await ready(pilot)
        await until(pilot, lambda: main.ready, what="the engine's catalog")
        for algorithm, title in (("mamlpp", "LSLR"), ("cavia", "context of this task"),
                                 ("alphamaml", "hypergradient"), ("r2d2", "ridge head")):
            main.pick_setting("algorithm", algorithm)
            await pilot.pause()
            if isinstance(app.screen, ConfirmDialog):
                await pilot.press("y")
            await settled(pilot, main, lambda s: s["settings"]["algorithm"] == algorithm, algorithm)
            await pilot.press("o")
            await settled(pilot, main, lambda s: s["step"] == 1, f"an outer step of {algorithm}")
            taken = main.snapshot["inner_steps_taken"]
            await pilot.press("i")
            snapshot = await settled(pilot, main, lambda s: s["inner_steps_taken"] == taken + 1, f"an inner step of {algorithm}")
            assert any(title in section["title"] for section in snapshot["algorithm_view"]), algorithm
            panel = main.query_one("#algorithm-panel", AlgorithmPanel)
            assert panel.display and title in panel.plain
        await pilot.press("a")
        assert isinstance(app.screen, AlgorithmScreen)
        await pilot.pause()
        assert "ridge head" in app.screen.query_one(AlgorithmPanel).plain
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_alphamaml_rates_are_drawn_over_outer_steps():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await until(pilot, lambda: main.ready, what="the engine's catalog")
        main.pick_setting("algorithm", "alphamaml")
        await pilot.pause()
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["settings"]["algorithm"] == "alphamaml" and s["step"] == 0, "alphamaml")
        for count in (1, 2, 3):
            await pilot.press("o")
            await settled(pilot, main, lambda s: s["step"] == count, f"outer step {count}")
        await until(pilot, lambda: len(main.records["learned"]) == 3, what="three records")
        history = main.learned_history()
        assert set(history) == {"alpha", "beta"} and len(history["alpha"]) == 3
        await pilot.press("a")  # at 100x30 the panel lives on its own screen
        await pilot.pause()
        text = app.screen.query_one(AlgorithmPanel).plain
        assert "alpha" in text and "beta" in text and any(ch in text for ch in "▁▂▃▄▅▆▇█")


async def test_ascii_mode_draws_without_braille():
    app = make_app(ascii_mode=True)
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        text = main.query_one(FitPlot).render().plain
        assert not any(0x2800 <= ord(ch) <= 0x28FF for ch in text)
        assert "." in text


async def test_a_killed_engine_loses_nothing_r_restores_the_autosave_and_says_from_which_step():
    app = make_app(mode="process")
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        assert app.engine.process is not None and app.engine.process.is_alive()
        await pilot.press("m")
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["step"] == 0 and s["source"] == "new model", "a new model")
        await pilot.press("b")  # a burst: 100 outer steps of a model that exists nowhere else
        await settled(pilot, main, lambda s: s["step"] == 100, "a burst of training")
        await until(pilot, lambda: main.autosaved_step == 100, what="the automatic checkpoint")
        assert "100 unsaved" in str(main.query_one("#status").render())
        app.engine.send("crash", code=9)  # as kill -9 would
        await until(pilot, lambda: "stopped unexpectedly" in main.message, what="the crash report")
        assert "exit code 9" in main.message and "stopped" in str(main.query_one("#status").render())
        running = main.running
        await pilot.press("space", "i")  # a dead engine: nothing pretends to run
        assert main.running == running and "engine is down" in main.message and "press R" in main.message
        await pilot.press("R")  # a new engine process, started while Textual owns stderr
        await ready(pilot)
        assert app.engine.process.is_alive()
        assert main.snapshot["step"] == 100 and main.snapshot["source"] == "new model"  # not the shipped model
        await until(pilot, lambda: "restored the autosaved model from outer step 100" in main.message, what="the restore")
        assert "100 unsaved" in str(main.query_one("#status").render())
        await pilot.press("q")
        assert isinstance(app.screen, QuitDialog)  # unsaved training: it asks
        await pilot.press("d")


async def test_a_run_that_cannot_be_opened_says_why_in_full_and_l_m_and_r_still_work(tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    app = make_app(run=broken)
    async with app.run_test(size=(80, 24)) as pilot:
        main = app.main
        await until(pilot, lambda: main is not None and "could not open" in main.message, what="the open error")
        assert "is not valid JSON" in main.message and main.snapshot is None and main.ready
        await pilot.press("i")
        await until(pilot, lambda: "no model is open" in main.message, what="the answer to i")
        await pilot.press("N")  # the full reason, even at 80 columns
        assert isinstance(app.screen, MessagesScreen)
        text = str(app.screen.query_one("#message-list").render())
        assert "could not open" in text and "corrupt" in text
        await pilot.press("escape")
        await pilot.press("l")
        app.screen.query_one("#path").value = str(SHIPPED_RUN)
        await pilot.press("enter")
        await settled(pilot, main, lambda s: s["step"] == 70_000, "the shipped run, opened after the failure")
        assert main.message == ""  # the stale error is gone
        await pilot.press("m")
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["step"] == 0, "a new model")


async def test_r_after_a_failed_start_starts_the_engine_again(tmp_path: Path):
    app = make_app(run=tmp_path / "not-a-run")
    async with app.run_test(size=SIZE) as pilot:
        main = app.main
        await until(pilot, lambda: main is not None and "could not open" in main.message, what="the open error")
        assert "not a run directory" in main.message
        await pilot.press("R")
        await until(pilot, lambda: "restarting the engine" in main.message or "could not open" in main.message,
                    what="the restart")
        await until(pilot, lambda: main.ready and "could not open" in main.message, what="the second attempt")
        await pilot.press("m")
        await pilot.press("y")
        await settled(pilot, main, lambda s: s["step"] == 0 and s["source"] == "new model", "a new model after R")


async def test_quitting_with_unsaved_training_asks_save_discard_or_cancel(tmp_path: Path):
    app = make_app()
    run = tmp_path / "kept"
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        status = str(main.query_one("#status").render())
        assert "saved in sinusoid-maml" in status and "unsaved" not in status  # where the model is kept
        await pilot.press("o")
        await settled(pilot, main, lambda s: s["unsaved_steps"] == 1, "one unsaved outer step")
        await pilot.press("q")
        assert isinstance(app.screen, QuitDialog) and "1 outer steps" in str(app.screen.query_one(".question").render())
        await pilot.press("c")
        assert isinstance(app.screen, MainScreen) and app.is_running
        await pilot.press("q")
        await pilot.press("s")
        assert isinstance(app.screen, PathDialog)
        app.screen.query_one("#path").value = str(run)
        await pilot.press("enter")
        await until(pilot, lambda: not app.is_running, what="the quit after saving")
    assert (run / "checkpoint.pt").is_file() and (run / "preview.json").is_file()


def test_the_status_says_where_the_model_is_kept_or_how_much_is_unsaved():
    from maml_tui.screens.main import saved_text

    assert saved_text("/runs/sine-a", 0, 500) == "saved in sine-a"
    assert saved_text("/runs/sine-a", 12, 512) == "12 unsaved"
    assert saved_text("new model", 0, 0) == "new model, unsaved"
    assert saved_text("new model", 40, 40) == "40 unsaved"


class HeldEngine(EngineLink):
    """A thread engine that starts only when the test lets it: the seconds of a real start-up."""

    def __init__(self, **options) -> None:
        super().__init__(mode="thread", device="cpu", **options)
        import threading

        self.release = threading.Event()

    def start(self) -> None:
        import queue
        import threading

        if self.started:
            return
        self.started = True
        self.commands, self.events = queue.Queue(), queue.Queue()

        def held() -> None:
            self.release.wait(60)
            from engine.explorer_server import serve

            serve(self.commands, self.events, **self.options)

        self.thread = threading.Thread(target=held, daemon=True)
        self.thread.start()


async def test_the_run_is_on_screen_before_the_engine_and_early_keys_do_not_fire_later():
    link = HeldEngine()
    app = ExplorerApp(link)
    async with app.run_test(size=(80, 24)) as pilot:
        main = app.main
        await until(pilot, lambda: main.snapshot is not None, what="the preview")
        assert not main.ready
        panel = main.query_one(SettingsPanel)
        assert main.query_one("#setting-shots", Select).value == "10"  # the run's, not a made-up first option
        assert main.query_one("#setting-inner_lr", Select).value == "0.001"
        assert main.query_one("#setting-algorithm", Select).value == "maml" and "mamlpp" in panel.choices["algorithm"]
        assert "sinusoid #1" in str(main.query_one(FitPlot).border_title) and main.records["step"][-1] == 70_000
        assert "starting engine" in str(main.query_one("#status").render())
        await pilot.press("i", "space")
        assert "still starting" in main.message
        link.release.set()
        await until(pilot, lambda: main.ready, what="the engine")
        await pilot.pause(0.5)
        assert main.snapshot["inner_steps_taken"] == 0 and not main.running  # nothing fired later
        await pilot.press("i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "an inner step once ready")


async def test_at_80x24_every_title_fits_and_every_curve_is_named_by_its_glyph():
    from rich.text import Text

    from maml_tui.widgets import GradientChart, InnerCurveChart

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        await pilot.press("i", "i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 2, "two inner steps")
        await until(pilot, lambda: main.records["step"], what="the charts")
        main.redraw(force=True)
        await pilot.pause()
        for widget in (main.query_one(FitPlot), main.query_one(LossChart), main.query_one(GradientChart),
                       main.query_one(InnerCurveChart)):
            for text in (widget.border_title, widget.border_subtitle):
                assert Text.from_markup(str(text or "")).cell_len <= widget.size.width - 4, (widget.id, text)
        fit = main.query_one(FitPlot)
        assert "MSE" in str(fit.border_title) and "→" in str(fit.border_title)
        legend = Text.from_markup(str(fit.border_subtitle)).plain
        for glyph in ("⠒ truth", "o sup", "x q", "· θ", "• θ′"):
            assert glyph in legend, legend
        status = main.query_one("#status").render()
        assert Text.from_markup(str(status)).cell_len <= 80 if isinstance(status, str) else True


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_a_prediction_far_off_the_data_is_drawn_clipped_and_said_so(size):
    import copy

    app = make_app()
    async with app.run_test(size=size) as pilot:
        main = await ready(pilot)
        far = copy.deepcopy(main.snapshot)
        far["predictions"] = [[100.0 * v + 50.0 for v in far["predictions"][0]]]
        main.draw_fit(far)
        await pilot.pause()
        assert "clipped" in Text.from_markup(str(main.query_one(FitPlot).border_subtitle)).plain


async def test_ascii_mode_gives_every_series_its_own_character():
    app = make_app(ascii_mode=True)
    async with app.run_test(size=SIZE) as pilot:
        main = await ready(pilot)
        await pilot.press("i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "an inner step")
        main.redraw(force=True)
        await pilot.pause()
        fit = main.query_one(FitPlot)
        text = "".join(strip.text for strip in fit._build_strips(fit.size.width, fit.size.height))
        assert not any(0x2800 <= ord(ch) <= 0x28FF for ch in text)
        for mark in ("-", ".", "#", "o", "x"):
            assert mark in text, mark
        from rich.text import Text

        assert "- truth" in Text.from_markup(str(fit.border_subtitle)).plain


async def test_too_small_says_the_current_size():
    app = make_app()
    async with app.run_test(size=(70, 20)) as pilot:
        await pilot.pause()
        assert "70x20" in str(app.main.query_one("#too-small").render())


def test_the_keys_line_fits_its_width_and_keeps_help_and_quit():
    from rich.text import Text

    from maml_tui.widgets.keys import STATES, keys_line

    for state in STATES:
        for width in (79, 99, 159, 199):
            line, shown = keys_line(state, width)
            assert Text.from_markup(line).cell_len <= width, (state, width)
            assert shown[-2:] == ["?", "q"]
    wide = keys_line("ready", 199)[1]
    for key in ("space", "i", "n", "o", "c", "p", "s", "l", "P", "t", "a", "g", "m", "N", "^p"):
        assert key in wide, key  # compare, baseline, save, open, open-baseline and palette all visible
    assert keys_line("starting", 199)[1] == ["N", "^p", "?", "q"]
    assert "R" in keys_line("down", 79)[1] and "i" not in keys_line("down", 199)[1]
    assert "pause" in Text.from_markup(keys_line("running", 199)[0]).plain


async def test_the_keys_bar_follows_the_state_and_its_keys_work():
    from maml_tui.widgets.keys import KeysBar

    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        main = await ready(pilot)
        bar = main.query_one(KeysBar)
        await until(pilot, lambda: bar.state == "ready", what="the ready keys")
        assert {"c", "p", "s", "l", "P", "^p"} <= set(bar.shown)
        await pilot.press("space")
        await until(pilot, lambda: bar.state == "running", what="the running keys")
        assert "pause" in str(bar.render())
        await pilot.press("space")
        await pilot.press("P")  # open a run as the baseline: a key of its own now
        assert isinstance(app.screen, PathDialog) and "baseline" in app.screen.title_text
        await pilot.press("escape")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        bar = main.query_one(KeysBar)
        await until(pilot, lambda: bar.state == "ready", what="the ready keys")
        assert bar.shown[:4] == ["space", "i", "n", "o"] and bar.shown[-2:] == ["?", "q"]


def test_device_memory_is_none_on_the_cpu():
    import torch

    from engine.explorer_server import device_memory

    assert device_memory(torch.device("cpu")) is None


async def test_on_a_gpu_the_status_shows_its_name_and_the_memory_in_use():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        assert "GiB" not in str(main.query_one("#status").render())  # the CPU: no memory figure
        main.apply_events([{**main.engine_info, "kind": "ready", "device_name": "NVIDIA H200"},
                           {"kind": "snapshot", "snapshot": main.snapshot, "running": False, "its_per_second": 0.0,
                            "memory": [1.234, 139.8]}])  # as the engine reports them on a GPU box
        main.redraw(force=True)
        await pilot.pause()
        status = str(main.query_one("#status").render())
        assert "NVIDIA H200" in status and "1.2/140 GiB" in status and "step 70,000" in status


async def test_companions_say_they_train_side_by_side_and_how_far_they_have_got():
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        await pilot.press("c")
        snapshot = await settled(pilot, main, lambda s: len(s["companions"]) == 1, "a compared algorithm")
        compared = snapshot["companions"][0]["algorithm"]
        await until(pilot, lambda: "side by side" in main.message, what="the announcement")
        assert compared in main.message and "from scratch" in main.message
        panel = main.query_one(SettingsPanel)
        assert f"{compared} @0" in str(panel.border_subtitle)  # at 80 columns, the compact form
        await pilot.press("o", "o", "o")
        await settled(pilot, main, lambda s: s["companions"][0]["step"] == 3, "three outer steps for the companion too")
        assert f"{compared} @3" in str(panel.border_subtitle)
        assert f"{compared} @3" in str(main.query_one(FitPlot).border_subtitle) or compared[:8] in str(main.query_one(FitPlot).border_subtitle)
        await pilot.press("p")
        await settled(pilot, main, lambda s: len(s["companions"]) == 2, "the baseline")
        await until(pilot, lambda: "pretrained baseline" in main.message, what="the baseline's announcement")
        subtitle = str(panel.border_subtitle)
        assert len(subtitle) <= panel.size.width - 6 and "pretrain" in subtitle and compared in subtitle  # nothing cut


async def test_an_open_dropdown_is_a_titled_box_over_the_labels():
    from textual.widgets._select import SelectOverlay

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        select = main.query_one("#setting-shots", Select)
        select.focus()
        await pilot.press("enter")
        await pilot.pause(0.2)
        overlay = select.query_one(SelectOverlay)
        panel = main.query_one(SettingsPanel)
        assert select.expanded and overlay.border_title == "shots"
        label = select.parent.query_one("Label")
        # the list covers the label column, so no option reads as a label's value ("model maml")
        assert overlay.region.x <= label.region.x and overlay.region.right <= panel.region.right
        await pilot.press("escape")


async def test_t_shows_small_multiples_of_the_meta_batch_live():
    from maml_tui.screens import BatchScreen
    from maml_tui.widgets import TaskPlot

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        await pilot.press("t")
        assert isinstance(app.screen, BatchScreen)
        await until(pilot, lambda: len(main.snapshot.get("batch_tasks") or ()) == 4, what="four tasks of the meta-batch")
        await pilot.pause(0.4)
        screen = app.screen
        plots = list(screen.query(TaskPlot))
        assert len(plots) == 4 and all(p.draws for p in plots)  # 2x2 at 80x24
        assert all("MSE" in str(p.border_title) and "→" in str(p.border_title) for p in plots)
        title = str(screen.query_one("#batch-title").render())
        assert "4 of 25 tasks" in title and "no outer step yet" in title
        first = main.snapshot["batch_tasks"][0]["task_params"]
        await pilot.press("o")  # trains from here: the panel follows the new meta-batch
        await settled(pilot, main, lambda s: s["step"] == 70_001 and s.get("batch_source") == "last", "an outer step")
        await pilot.pause(0.4)
        assert "outer step 70,001" in str(screen.query_one("#batch-title").render())
        assert main.snapshot["batch_tasks"][0]["task_params"] != first
        assert "θ′ after 1 step" in str(screen.query_one("#batch-legend").render())
        await pilot.press("escape")
        assert app.screen is main
        await pilot.press("i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1 and not s.get("batch_tasks"), "snapshots without the batch")
    app = make_app(ascii_mode=True)
    async with app.run_test(size=(120, 40)) as pilot:
        main = await ready(pilot)
        await pilot.press("t")
        await until(pilot, lambda: len(main.snapshot.get("batch_tasks") or ()) == 9, what="nine tasks")
        await pilot.pause(0.4)
        plot = app.screen.query(TaskPlot).first()
        text = "".join(strip.text for strip in plot._build_strips(plot.size.width, plot.size.height))
        assert not any(0x2800 <= ord(ch) <= 0x28FF for ch in text) and "#" in text and "o" in text


async def test_a_long_message_never_runs_off_the_status_line():
    from textual.content import Content

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        main = await ready(pilot)
        status = main.query_one("#status")
        short = "saved step 3 to runs/x"
        main.set_message(short)
        await pilot.pause()
        line = Content.from_markup(status.line(80)).plain
        assert short in line and "maml" in line and len(line) <= 80  # room for everything
        long = "could not open runs/broken: its config.json is corrupt (Expecting property name enclosed in double quotes)"
        main.set_message(long, "error")
        await pilot.pause()
        line = Content.from_markup(status.line(80)).plain
        assert len(line) <= 80 and line.startswith("step 70,000 · paused") and line.endswith("N: in full")
        line = Content.from_markup(status.line(200)).plain
        assert long in line and len(line) <= 200


async def test_at_80x24_the_legend_names_every_curve_with_compare_and_baseline_on():
    from rich.text import Text

    from maml_tui.preferences import preferences_path

    for ascii_mode in (False, True):
        preferences_path().unlink(missing_ok=True)  # the first launch's compare and baseline would come back
        app = make_app(ascii_mode=ascii_mode)
        async with app.run_test(size=(80, 24)) as pilot:
            main = await ready(pilot)
            await pilot.press("c")
            await settled(pilot, main, lambda s: len(s["companions"]) == 1, "the compared model")
            await pilot.press("p", "i", "i")
            await settled(pilot, main, lambda s: len(s["companions"]) == 2 and s["inner_steps_taken"] == 2,
                          lambda: f"both companions and two steps, not {[c['role'] for c in main.snapshot['companions']]}, "
                                  f"{main.snapshot['inner_steps_taken']} steps")
            fit = main.query_one(FitPlot)
            legend = Text.from_markup(str(fit.border_subtitle)).plain
            assert len(legend) <= fit.size.width - 4, legend
            for name in ("truth", "θ′", main.compare_algorithm[:6], "pretrain"):
                assert name in legend, (name, legend)


async def test_with_room_the_fit_title_gives_the_update_rule_and_the_support_loss_it_lowers():
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        main = await ready(pilot)
        await pilot.press("i")
        snapshot = await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "an inner step")
        title = str(main.query_one(FitPlot).border_title)
        assert "θ′ = θ − 0.001·∇L_support" in title
        before, after = snapshot["support_loss"]
        assert f"L_support {before:.3g} → {after:.3g}" in title and after < before


# -- classification: the episode in place of the fit ----------------------------------------------
async def pick_digits(pilot, main: MainScreen) -> dict:
    """Pick the digits family in the panel's way; the shipped model is trained, so it asks first."""
    main.pick_setting("task", "digits")
    await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDialog), what="the question about throwing training away")
    assert "task family to digits starts a new model" in pilot.app.screen.question
    await pilot.press("y")
    return await settled(pilot, main, lambda s: s.get("classification") is not None, "a digits episode")


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_digits_show_the_episode_images_and_probabilities_that_inner_steps_move(size):
    from maml_tui.widgets import AccuracyChart, EpisodeView, GradientChart

    app = make_app()
    async with app.run_test(size=size) as pilot:
        main = await ready(pilot)
        first = await pick_digits(pilot, main)
        view, fit, accuracy = main.query_one(EpisodeView), main.query_one(FitPlot), main.query_one(AccuracyChart)
        assert view.display and accuracy.display and not fit.display
        assert main.query_one(LossChart).display and main.query_one(GradientChart).display
        assert main.query_one(SettingsPanel).choices["algorithm"][-1] == "protonet"  # offered on classification
        await pilot.press("i")
        stepped = await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "an inner step on the episode")
        await pilot.pause()
        assert stepped["classification"]["probabilities"][1] != first["classification"]["probabilities"][0]
        text = view.plain
        assert text.count("▀") >= 5 * 8 * 4 and "0 " in text and "is " in text  # five support digits, a query
        assert any(ch in text for ch in "▁▂▃▄▅▆▇█")  # its bars
        title = Text.from_markup(str(view.border_title)).plain
        assert "#" in title and "5-way 1-shot" in title and "acc" in title and "→" in title
        for widget in (view, accuracy, main.query_one(LossChart), main.query_one(GradientChart)):
            for markup in (widget.border_title, widget.border_subtitle):
                assert Text.from_markup(str(markup or "")).cell_len <= widget.outer_size.width - 4, (widget.id, markup)
        assert "CE" in str(main.query_one(LossChart).border_title) and "%" in accuracy.plain
        await pilot.press("r")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 0, "a reset")
        number = main.snapshot["task_number"]
        await pilot.press("n")
        drawn = await settled(pilot, main, lambda s: s["task_number"] == number + 1, "a new episode")
        assert drawn["classification"]["support"] != first["classification"]["support"]
        await pilot.press("t")  # the small multiples draw curves: said so, nothing opens
        await pilot.pause()
        assert isinstance(app.screen, MainScreen) and "regression" in main.message
        main.pick_setting("task", "sinusoid")  # an untrained digits model: nothing to lose, nothing asked
        back = await settled(pilot, main, lambda s: s.get("classification") is None, "the sinusoid again")
        await pilot.pause()
        assert fit.display and not view.display and not accuracy.display
        assert back["settings"]["shots"] == 10 and "MSE" in str(main.query_one(LossChart).border_title)
        assert "protonet" not in main.query_one(SettingsPanel).choices["algorithm"]


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_the_ways_picker_unseen_classes_and_companions_on_an_episode(size):
    from textual.widgets import Select

    from maml_tui.widgets import AccuracyChart, EpisodeView

    app = make_app()
    async with app.run_test(size=size) as pilot:
        main = await ready(pilot)
        panel = main.query_one(SettingsPanel)
        assert not panel.query_one("#row-ways").display  # regression: no ways to pick
        await pick_digits(pilot, main)
        await pilot.pause()
        assert panel.query_one("#row-ways").display
        assert panel.choices["ways"] == ("2", "3", "4", "5", "8")  # digits' smallest split has 8 classes
        assert panel.query_one("#setting-ways", Select).value == "5"
        main.pick_setting("ways", "3")  # an untrained model: nothing asked
        three = await settled(pilot, main, lambda s: s["settings"].get("ways") == 3, "a 3-way model")
        assert three["classification"]["ways"] == 3 and len(three["classification"]["support"]) == 3
        view = main.query_one(EpisodeView)
        assert "3-way" in Text.from_markup(str(view.border_title)).plain
        await pilot.press("u")
        unseen = await settled(pilot, main, lambda s: s["classification"]["split"] == "test", "an episode of unseen classes")
        assert all(c // 4 in (4, 5) for c in unseen["classification"]["classes"])  # digits 4 and 5, never trained on
        assert "meta-test classes" in main.message
        assert "unseen" in Text.from_markup(str(view.border_title)).plain
        await pilot.press("p")  # the pretrained baseline beside: its accuracy on the same episode, named
        with_baseline = await settled(pilot, main, lambda s: any(c["role"] == "baseline" for c in s["companions"]), "the baseline")
        await pilot.press("i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "an inner step")
        await pilot.pause()
        chart = main.query_one(AccuracyChart)
        assert "vs pretrain" in chart.plain and "%" in chart.plain.splitlines()[0]
        assert with_baseline["companions"][0]["accuracy"]
        await pilot.press("u")
        await settled(pilot, main, lambda s: s["classification"]["split"] == "train", "episodes of the train classes again")
        main.pick_setting("task", "sinusoid")
        await settled(pilot, main, lambda s: s.get("classification") is None, "the sinusoid again")
        await pilot.pause()
        assert not panel.query_one("#row-ways").display
        await pilot.press("u")
        await pilot.pause()
        assert "classification family" in main.message


async def test_digits_in_ascii_mode_draw_shades_with_characters():
    from maml_tui.widgets import EpisodeView

    app = make_app(ascii_mode=True)
    async with app.run_test(size=(160, 48)) as pilot:
        main = await ready(pilot)
        await pick_digits(pilot, main)
        await pilot.press("i")
        await settled(pilot, main, lambda s: s["inner_steps_taken"] == 1, "an inner step")
        await pilot.pause()
        text = main.query_one(EpisodeView).plain
        assert all(ord(ch) < 128 for ch in text) and "@" in text and "#" in text
        assert len(main.snapshot["classification"]["query"]) == 10 and text.count("is ") == 10  # all fit at 160x48


@pytest.mark.parametrize("size", [(120, 40), (80, 24)])
async def test_g_compares_the_meta_gradients_live_and_the_fit_shows_the_sharpness(size):
    from maml_tui.screens import GradientScreen
    from maml_tui.widgets import InnerCurveChart

    app = make_app()
    async with app.run_test(size=size) as pilot:
        main = await ready(pilot)
        chart = main.query_one(InnerCurveChart)
        await until(pilot, lambda: "α·λmax" in str(chart.border_subtitle), what="the sharpness indicator")
        assert main.sharpness["reason"] == "" and main.sharpness["at_theta"] > 0
        await pilot.press("i")
        await until(pilot, lambda: "→" in str(chart.border_subtitle), what="the sharpness at θ′ too")
        assert main.gradients is None  # nothing was compared while the panel was closed
        await pilot.press("g")
        assert isinstance(app.screen, GradientScreen)
        await until(pilot, lambda: main.gradients is not None, what="the engine's meta-gradient comparison")
        await pilot.pause(0.4)
        screen = app.screen
        table = str(screen.query_one("#gradient-table").render())
        lines = table.splitlines()
        assert len(lines) == 6 and "cosine" in lines[0]
        for line, label in zip(lines[1:], ("exact MAML", "first-order", "Reptile", "iMAML", "Hessian-free")):
            assert line.startswith(label) and any(ch.isdigit() for ch in line[26:]), line
        assert lines[1].split()[4:6] == ["1", "1"]  # the exact one against itself: cosine 1, norm ratio 1
        assert "no outer step yet" in str(screen.query_one("#gradient-title").render())
        sharpness = str(screen.query_one("#gradient-sharpness").render())
        assert "α·λ_max" in sharpness and "at θ′ after 1 step" in sharpness and "2" in sharpness
        assert "cosine" in str(screen.query_one("#gradient-explain").render())
        await pilot.press("o")  # trains from here: the comparison follows the new theta and meta-batch
        await until(pilot, lambda: main.gradients is not None and main.gradients["step"] == 70_001, what="a fresh comparison")
        await pilot.pause(0.4)
        assert "outer step 70,001" in str(screen.query_one("#gradient-title").render())
        await pilot.press("escape")
        assert app.screen is main
        main.gradients = None
        await pilot.press("o")
        await settled(pilot, main, lambda s: s["step"] == 70_002, "an outer step with the panel closed")
        await pilot.pause(0.3)
        assert main.gradients is None  # closed: the engine compares nothing
