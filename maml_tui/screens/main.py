"""The main screen: settings on the left, the fit and the charts on the right, a status line below.

It turns keys, clicks and palette picks into engine commands and engine events into pictures.
Events only store data and mark plots dirty; a timer redraws at most ``REDRAW_RATE`` times a
second (the charts of the outer loop less often), and each plot skips a redraw whose data has not
changed, so a fast engine never floods the interface.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Select, Static

from engine.memory import release_memory  # torch-free
from maml_tui.screens.algorithm import AlgorithmScreen
from maml_tui.screens.batch import BatchScreen
from maml_tui.screens.dialogs import ConfirmDialog, PathDialog, QuitDialog
from maml_tui.screens.gradients import GradientScreen, compact_sharpness
from maml_tui.screens.help import HelpScreen
from maml_tui.screens.messages import MessagesScreen
from maml_tui.widgets import AlgorithmPanel, FitPlot, GradientChart, InnerCurveChart, LossChart, SettingsPanel, StatusBar
from maml_tui.widgets.episode import AccuracyChart, EpisodeView
from maml_tui.widgets.keys import KeysBar
from maml_tui.widgets.plots import legend_markup
from maml_tui.widgets.plots import set_border as _border
from maml_tui.widgets.settings import as_text

MINIMUM_SIZE = (80, 24)
ROOMY_SIZE = (110, 34)  # from here on the algorithm panel has room beside the plots
REDRAW_RATE = 10.0  # status redraws per second, at most
FIT_INTERVAL = 0.2  # seconds between redraws of the fit while training (a key press redraws at once)
CHART_INTERVAL = 1.0  # seconds between redraws of the outer-loop charts
BURST = 100
FRESH_SETTINGS = ("algorithm", "hidden")  # until the engine says which settings start a new model


def _answer_to_a_person(previous: dict, current: dict) -> bool:
    """True when a snapshot changes more than the outer step (an inner step, a task, a setting)."""
    keys = ("inner_steps_taken", "task_number", "settings", "source")
    return any(previous[k] != current[k] for k in keys) or len(previous["companions"]) != len(current["companions"])


def _nan_for_none(value):
    """A preview is strict JSON (NaN written as null); the plots want NaN back."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _nan_for_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_for_none(v) for v in value]
    return value


def saved_text(source: str, unsaved: int, step: int) -> str:
    """The status's word on the model: "N unsaved" (outer steps trained since it was saved or
    opened), or where it is kept ("saved in sinusoid-maml")."""
    if unsaved or (source == "new model" and step > 0):
        return f"{unsaved:,} unsaved"
    if source == "new model":
        return "new model, unsaved"
    return f"saved in {Path(source).name or source}"


def side_by_side(companions, width: int) -> str:
    """Under the settings: which models train beside the main one and their outer steps."""
    if not companions:
        return ""
    levels = (("side by side: ", True, lambda n: f"{n:,} steps"), ("beside: ", True, lambda n: f"@{n:,}"),
              ("", False, lambda n: f"@{n:,}"), ("", False, lambda n: f"@{_short_count(n)}"))
    for prefix, say_baseline, steps in levels:
        names = [("baseline " if c["role"] == "baseline" and say_baseline else "") + c["algorithm"] for c in companions]
        text = prefix + ", ".join(f"{name} {steps(c['step'])}" for name, c in zip(names, companions))
        if len(text) <= width:
            return text
    return text[: width - 1] + "…"


def _short_count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "∞"


MESSAGES_KEPT = 1_000  # the newest messages N lists (older ones are dropped)

class MainScreen(Screen):
    """Everything the explorer shows at once."""

    AUTO_FOCUS = None
    BINDINGS = [
        Binding("i", "inner_step", "Inner step", priority=True, tooltip="one inner gradient step on the current task's support set"),
        Binding("r", "reset_adaptation", "Reset", priority=True, tooltip="reset the adaptation: back to theta (0 inner steps)"),
        Binding("n", "new_task", "New task", priority=True, tooltip="draw a new task (support and query points)"),
        Binding("o", "outer_step", "Outer step", priority=True, tooltip="one meta-update on a fresh meta-batch"),
        Binding("b", "outer_burst", "Burst", priority=True, show=False, tooltip=f"a burst of {BURST} meta-updates"),
        Binding("space", "toggle_run", "Run/pause", priority=True, tooltip="run or pause meta-training live"),
        Binding("c", "cycle_compare", "Compare", priority=True, show=False, tooltip="compare with the next algorithm (trained side by side); cycles to off"),
        Binding("p", "toggle_baseline", "Baseline", priority=True, show=False, tooltip="train the pretrained baseline side by side (toggle)"),
        Binding("a", "algorithm_view", "Algorithm", priority=True, show=False,
                tooltip="what the algorithm itself learns, live: MAML++'s rate per layer and step, CAVIA's context, Alpha-MAML's rates"),
        Binding("t", "batch_view", "Meta-batch", priority=True, show=False,
                tooltip="small multiples: a few tasks of the meta-batch, each before and after its inner steps, live"),
        Binding("g", "gradient_view", "Meta-gradient", priority=True, show=False,
                tooltip="the exact second-order meta-gradient against first-order, Reptile, iMAML and finite differences "
                        "on the meta-batch (cosine, norm ratio, time, memory), and the task's sharpness α·λmax, live"),
        Binding("u", "toggle_unseen", "Unseen classes", priority=True, show=False,
                tooltip="classification: draw episodes from the unseen meta-test classes, or back from the meta-train ones (toggle)"),
        Binding("m", "new_model", "New model", priority=True, show=False, tooltip="start from a fresh random model (asks first)"),
        Binding("s", "save", "Save", priority=True, show=False, tooltip="save a checkpoint into a run directory"),
        Binding("l", "open_run", "Open", priority=True, show=False, tooltip="open a run directory or checkpoint"),
        Binding("P", "open_baseline", "Open baseline", priority=True, show=False,
                tooltip="open a run directory as the pretrained baseline (drawn beside the model)"),
        Binding("R", "restart_engine", "Restart engine", priority=True, show=False,
                tooltip="restart the engine after a crash or a failed start; it restores the model it autosaved"),
        Binding("N", "messages", "Messages", priority=True, show=False, tooltip="every message since launch, in full"),
        Binding("question_mark", "help", "Help", key_display="?", priority=True, tooltip="this help"),
        Binding("q", "quit", "Quit", priority=True, tooltip="quit"),
    ]

    def __init__(self, ascii_mode: bool = False, present: bool = False) -> None:
        super().__init__()
        self.ascii_mode = ascii_mode
        self.present = present
        self.snapshot: dict | None = None
        self.records: dict[str, list] = {k: [] for k in ("step", "before", "after", "meta", "inner", "learned")}
        self.catalog: dict = {}
        self.records_version = 0
        self.running = False
        self.its_per_second = 0.0
        self.ready = False  # the engine has answered; until then the picture is the run's preview
        self.engine_down = ""  # why the engine is not there (a crash, a failed start), or ""
        self.autosaved_step: int | None = None  # the step this session's engine last kept safe
        self.messages: list[tuple[float, str, str]] = []  # (time, severity, text): the messages since launch
        self.quitting = False  # waiting for a save to finish before quitting
        self.engine_info: dict = {}
        self.memory: tuple[float, float] | None = None  # GiB held of the GPU and its size (None on the CPU)
        self.message = ""
        self.fit_dirty = self.charts_dirty = False
        self.charts_drawn_at = self.fit_drawn_at = self.curve_drawn_at = 0.0
        self.curve_taken = -1
        self.shown_settings: tuple | None = None
        self.remembered_source = ""  # the last opened run put among the recent ones
        self.view_restored = False  # the compare and baseline choices of the last launch are back
        self.gradients: dict | None = None  # the engine's last meta-gradient comparison (while g's screen is open)
        self.sharpness: dict | None = None  # the engine's last sharpness of the current task

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            with Vertical(id="side"):
                yield SettingsPanel(id="settings")
                yield AlgorithmPanel(ascii_mode=self.ascii_mode, id="algorithm-panel")
                yield InnerCurveChart(ascii_mode=self.ascii_mode, present=self.present, id="curve-chart")
                yield AccuracyChart(ascii_mode=self.ascii_mode, present=self.present, id="accuracy-chart")  # classification only
            with Vertical(id="plots"):
                yield FitPlot(ascii_mode=self.ascii_mode, present=self.present, id="fit")
                yield EpisodeView(ascii_mode=self.ascii_mode, present=self.present, id="episode")  # classification only
                with Horizontal(id="charts"):
                    yield LossChart(ascii_mode=self.ascii_mode, present=self.present, id="loss-chart")
                    yield GradientChart(ascii_mode=self.ascii_mode, present=self.present, id="grad-chart")
        yield Static(f"terminal too small (need {MINIMUM_SIZE[0]}x{MINIMUM_SIZE[1]})", id="too-small")
        yield StatusBar(id="status")
        yield KeysBar(id="keys-bar")  # the keys that matter now, as many as fit

    def on_mount(self) -> None:
        self.query_one("#settings").border_title = "settings"
        self.query_one("#algorithm-panel").border_title = "learned by the algorithm · a: full view"
        self.titles()
        fit = self.query_one(FitPlot)
        fit.border_title = "fit"
        fit.placeholder("starting engine…")
        self.query_one(StatusBar).update_status(state="starting engine…")
        self.check_size()
        self.show_preview()
        self.set_interval(1.0 / REDRAW_RATE, self.redraw)
        self.set_interval(30.0, release_memory)  # freed heap pages back to the system: flat over a long demo

    def show_preview(self) -> None:
        """Draw the run's ``preview.json`` (its first snapshot and records, written by the engine as
        plain JSON) while the engine process is still importing torch; its own first snapshot then
        replaces the picture with the same one."""
        run = getattr(self.app.engine, "options", {}).get("run")
        if not run:
            return
        try:
            document = json.loads((Path(run) / "preview.json").read_text())
        except (OSError, ValueError):
            return
        if not isinstance(document, dict) or document.get("format") != "maml-tui-preview":
            return
        document = _nan_for_none(document)
        self.catalog = document.get("catalog") or {}
        self.query_one(SettingsPanel).set_catalog(self.catalog)
        self.add_records(document.get("records") or [], reset=True)
        self.snapshot = document["snapshot"]
        self.draw_fit(self.snapshot)
        self.redraw(force=True)

    def titles(self) -> None:
        """Chart titles with each series' glyph in its colour (they change with the theme)."""
        look = self.query_one(LossChart).look
        tight = lambda kind, label: f"[{look.hex(kind)}]{look.glyph(kind)}{label}[/]"  # noqa: E731
        loss = "CE" if self.classifying else "MSE"  # the family's loss: cross-entropy for classification
        self.query_one("#curve-chart").border_title = f"query {loss} / inner step"
        self.query_one("#loss-chart").border_title = f"{loss} {tight('before', 'before')} {tight('after', 'after')}"
        self.query_one("#grad-chart").border_title = f"‖g‖ {tight('meta', 'meta')} {tight('inner', 'inner')}"

    def theme_changed(self) -> None:
        """Glyph colours in titles and legends follow the theme; everything is drawn again."""
        self.titles()
        self.charts_dirty = self.fit_dirty = bool(self.records["step"]) or self.snapshot is not None

    def on_resize(self) -> None:
        self.check_size()
        # series are downsampled to the plots' widths: draw them again at the new size
        self.charts_dirty = self.fit_dirty = bool(self.records["step"]) or self.snapshot is not None

    def check_size(self) -> None:
        width, height = self.app.size
        small = width < MINIMUM_SIZE[0] or height < MINIMUM_SIZE[1]
        if small:
            self.query_one("#too-small", Static).update(
                f"terminal too small: {width}x{height}\nthe explorer needs at least {MINIMUM_SIZE[0]}x{MINIMUM_SIZE[1]}")
        self.set_class(small, "too-small")
        self.set_class(width >= ROOMY_SIZE[0] and height >= ROOMY_SIZE[1], "roomy")

    # -- engine events --------------------------------------------------------------------------
    def apply_events(self, events: list[dict]) -> None:
        for event in events:
            kind = event["kind"]
            if kind == "ready":
                self.ready, self.engine_down = True, ""
                self.engine_info = event
                self.catalog = event.get("catalog", {})
                self.query_one(SettingsPanel).set_catalog(self.catalog)
                self.shown_settings = None
                self.set_message("")
            elif kind == "snapshot":
                previous, self.snapshot = self.snapshot, event["snapshot"]
                self.running = event["running"]
                self.remember(previous, self.snapshot)
                if previous is not None and self.ready:
                    self.announce_companions(previous, self.snapshot)
                self.its_per_second = event["its_per_second"]
                self.memory = event.get("memory")
                if previous is None or _answer_to_a_person(previous, self.snapshot):
                    self.fit_dirty = False
                    self.draw_fit(self.snapshot)  # draw now: someone pressed a key for this
                else:
                    self.fit_dirty = True
            elif kind == "records":
                self.add_records(event["records"], event["reset"])
            elif kind == "gradients":
                self.gradients = event["view"]
            elif kind == "sharpness":
                self.sharpness = event["view"]
                if self.snapshot is not None:
                    self.draw_sharpness(self.snapshot)
            elif kind == "error":
                self.running = self.quitting = False
                self.set_message(event["message"], "error")
                self.app.notify(event["message"], title="engine error", severity="error", timeout=8, markup=False)
                if event.get("no_model"):  # the run could not be opened; the engine waits for another
                    self.snapshot = None
                    self.placeholder("no model open: l opens a run, m starts a new one, N shows why")
                if event.get("fatal"):
                    self.ready, self.engine_down = False, event["message"]
                    self.placeholder("the engine could not start (see the status line)")
                    self.query_one(StatusBar).update_status(state="stopped")
            elif kind == "diverged":
                self.running = False
                self.set_message(f"paused: {event['message']}", "warning")
                self.app.notify(event["message"], title="training paused", severity="warning", timeout=8, markup=False)
            elif kind == "saved":
                self.app.preferences.remember_run(event["path"])
                self.app.save_preferences(last_save=str(event["path"]))
                self.set_message(f"saved step {event['step']:,} to {event['path']}")
                self.app.notify(f"saved step {event['step']:,} to {event['path']}", title="saved", markup=False)
                if self.quitting:
                    self.app.exit()
            elif kind == "note":  # a remark about what was opened, e.g. unreadable lines of its metrics
                self.set_message(event["message"], "warning")
                self.app.notify(event["message"], title="note", severity="warning", timeout=8, markup=False)
            elif kind == "autosaved":
                self.autosaved_step = event["step"]
            elif kind == "restored":
                source = event["source"]
                self.set_message(f"restored the autosaved model from outer step {event['step']:,} "
                                 f"(it came from {'a new model' if source == 'new model' else source})")
        self.redraw(status_only=True)

    def announce_companions(self, previous: dict | None, current: dict) -> None:
        """Say so when a model starts training side by side (and what it is), or stops."""
        before = {c["role"]: c for c in previous["companions"]} if previous is not None else {}
        now = {c["role"]: c for c in current["companions"]}
        for role, companion in now.items():
            if role in before and before[role]["algorithm"] == companion["algorithm"]:
                continue
            start = "from scratch" if companion["step"] == 0 else f"from outer step {companion['step']:,}"
            who = "the pretrained baseline" if role == "baseline" else f"{companion['algorithm']}"
            self.set_message(f"{who} trains side by side {start} on the same meta-batches (its steps: under the settings)")
        for role in before.keys() - now.keys():
            self.set_message(f"the {'baseline' if role == 'baseline' else 'compared model'} is gone")

    def remember(self, previous: dict | None, current: dict) -> None:
        """Keep an opened run among the recent ones; once per launch, bring back the compare and
        baseline choices of the last one."""
        if self.ready and not self.view_restored:
            self.view_restored = True
            preferences = self.app.preferences
            roles = {c["role"] for c in current["companions"]}
            names = {a["name"] for a in self.catalog.get("algorithms", ())}
            if preferences.compare in names - {current["settings"]["algorithm"]} and "compare" not in roles:
                self.engine.send("set_companion", role="compare", algorithm=preferences.compare)
            if preferences.baseline and "baseline" not in roles:
                self.engine.send("set_companion", role="baseline", algorithm="pretrain")
        source = current["source"]
        if source != "new model" and source != self.remembered_source and self.ready:
            self.remembered_source = source
            self.app.preferences.remember_run(source)
            self.app.save_preferences()

    def engine_died(self, exit_code: int | None) -> None:
        self.running = False
        self.ready = False
        self.engine_down = f"it stopped unexpectedly with exit code {exit_code}"
        text = f"the engine process stopped unexpectedly (exit code {exit_code}); press R to restart it"
        self.set_message(text, "error")
        self.query_one(StatusBar).update_status(state="stopped")
        self.placeholder("engine stopped: press R to restart")
        self.app.notify(text, title="engine crashed", severity="error", timeout=10, markup=False)

    def add_records(self, records: list[dict], reset: bool) -> None:
        if reset:
            for values in self.records.values():
                values.clear()
        for record in records:
            self.records["step"].append(record["step"])
            self.records["before"].append(record["query_loss_before"])
            self.records["after"].append(record["query_loss_after"])
            self.records["meta"].append(record["meta_grad_norm"])
            self.records["inner"].append(record["inner_grad_norm"])
            self.records["learned"].append(record.get("learned") or {})
        self.records_version += 1
        self.charts_dirty = True

    def set_message(self, text: str, severity: str = "information") -> None:
        self.message = text
        if text and (not self.messages or self.messages[-1][2] != text):
            self.messages.append((time.time(), severity, text))
            del self.messages[:-MESSAGES_KEPT]  # a long session's log stays bounded
        self.query_one(StatusBar).update_status(message=text, severity=severity)

    def action_messages(self) -> None:
        self.app.push_screen(MessagesScreen(self.messages))

    # -- drawing --------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """What the explorer can do now: starting, ready, running, no model or down."""
        if self.engine_down:
            return "down"
        if not self.ready:
            return "starting"
        if self.snapshot is None:
            return "no model"
        return "running" if self.running else "ready"

    def redraw(self, status_only: bool = False, force: bool = False) -> None:
        snapshot = self.snapshot
        status = self.query_one(StatusBar)
        self.query_one(KeysBar).show(self.state)
        if snapshot is not None:
            state = ("running" if self.running else "paused") if self.ready else (
                "stopped" if self.engine_down else "starting engine…")
            unsaved = snapshot.get("unsaved_steps", 0)
            status.update_status(device=self.engine_info.get("device_name") or self.engine_info.get("device", "…"),
                                 memory=tuple(self.memory) if self.memory else None,
                                 algorithm=snapshot["settings"]["algorithm"], step=snapshot["step"],
                                 its=self.its_per_second if self.running else None, state=state,
                                 saved=saved_text(snapshot["source"], unsaved, snapshot["step"]))
        if status_only and not force:
            return
        if self.fit_dirty and snapshot is not None and (force or time.monotonic() - self.fit_drawn_at >= FIT_INTERVAL):
            self.fit_dirty = False
            self.draw_fit(snapshot)
        if self.charts_dirty and (force or time.monotonic() - self.charts_drawn_at >= CHART_INTERVAL):
            self.charts_dirty = False
            self.charts_drawn_at = time.monotonic()
            self.draw_charts()

    def placeholder(self, text: str) -> None:
        """A word in place of the picture (starting, no model, stopped), on the fit plot."""
        self.show_kind(False)
        self.query_one(FitPlot).placeholder(text)

    @property
    def classifying(self) -> bool:
        """Whether the picture is a classification episode (images and bars) rather than a fit."""
        return self.has_class("classifying")

    def task_kind(self, task: str) -> str:
        """A task family's kind as the engine's catalog says ("regression" when it does not say)."""
        kinds = {t["name"]: t.get("kind") or "regression" for t in self.catalog.get("tasks", ())}
        return kinds.get(task, "regression")

    def show_kind(self, classifying: bool) -> None:
        """Switch the central picture (fit or episode), the loss's name and the pickers' algorithms."""
        if classifying == self.classifying:
            return
        self.set_class(classifying, "classifying")
        self.titles()
        self.query_one(SettingsPanel).set_kind("classification" if classifying else "regression")
        self.shown_settings = None
        self.charts_dirty = True

    def draw_fit(self, snapshot: dict) -> None:
        self.fit_drawn_at = time.monotonic()
        episode = snapshot.get("classification")
        self.show_kind(episode is not None)
        if episode is not None:
            self.draw_episode(snapshot, episode)
        else:
            self.draw_curves(snapshot)
        self.draw_side(snapshot)

    def draw_episode(self, snapshot: dict, episode: dict) -> None:
        """The classification view: the episode's images and bars, and the accuracy per inner step."""
        view = self.query_one(EpisodeView)
        view.show(episode)
        self.query_one(SettingsPanel).set_max_ways(episode.get("max_ways", 20))
        taken = snapshot["inner_steps_taken"]
        accuracy, loss = episode["accuracy"], snapshot["query_loss"]
        width = max(view.outer_size.width - 4, 20)  # a border title's room: the width less corners and spaces
        percent = lambda v: f"{100 * v:.0f}%" if math.isfinite(v) else "—"  # noqa: E731
        steps = f"{taken} step{'s' if taken != 1 else ''} · acc {percent(accuracy[0])}" + (f" → {percent(accuracy[-1])}" if taken else "")
        kind = f"{episode['ways']}-way {episode['shots']}-shot" + (" · unseen classes" if episode.get("split") == "test" else "")
        title = next((t for t in (f"{snapshot['settings']['task']} #{snapshot['task_number']} · {kind} · {steps}",
                                  f"#{snapshot['task_number']} · {kind} · {steps}") if len(t) <= width),
                     f"#{snapshot['task_number']}{' unseen' if episode.get('split') == 'test' else ''} · {steps}")
        extra = f" · CE {_number(loss[0])}" + (f" → {_number(loss[-1])}" if taken else "") + f" on {episode['query_count']} queries"
        look = view.look
        legend = (f"[{look.hex('before')}]{'|' if self.ascii_mode else '▆'} θ[/] "
                  f"[{look.hex('adapted')}]{'#' if self.ascii_mode else '▆'} θ′ step {taken}[/] "
                  f"[b {look.hex('truth')}]true label[/]")
        _border(view, title=title + (extra if len(title) + len(extra) <= width else ""), subtitle=legend)
        chart = self.query_one(AccuracyChart)
        others = [(c["algorithm"], c["accuracy"][min(taken, len(c["accuracy"]) - 1)])
                  for c in snapshot.get("companions", ()) if c.get("accuracy")]
        chart.show(episode["accuracy_curve"], taken, episode["ways"], others)
        chance = 1 / max(episode["ways"], 1)
        room = chart.outer_size.width - 6  # what a border title shows untruncated: less corners, spaces and padding
        title = next((t for t in ("query accuracy / inner step", "accuracy / inner step", "accuracy / step") if len(t) <= room), "acc")
        subtitle = next((t for t in (f"now {percent(accuracy[-1])} · chance {percent(chance)}", f"{percent(accuracy[-1])}, "
                                     f"chance {percent(chance)}") if len(t) <= room), percent(accuracy[-1]))
        sharp = self.sharpness_text(snapshot)
        plain = sharp.replace("[b red]", "").replace("[b]", "").replace("[/]", "")
        if sharp and len(subtitle) + 3 + len(plain) <= room:
            subtitle = f"{subtitle} · {sharp}"
        _border(chart, title=title, subtitle=subtitle)

    def draw_curves(self, snapshot: dict) -> None:
        fit = self.query_one(FitPlot)
        legend = fit.show_fit(snapshot)
        taken = snapshot["inner_steps_taken"]
        before, after = snapshot["query_loss"][0], snapshot["query_loss"][-1]
        width = max(fit.size.width - 4, 20)
        title = (f"{snapshot['settings']['task']} #{snapshot['task_number']} · {taken} step{'s' if taken != 1 else ''} · "
                 f"MSE {_number(before)}" + (f" → {_number(after)}" if taken else ""))
        rule = f" · θ′ = θ − {snapshot['inner_lr']:g}·∇L_support"  # the update rule, with its number
        support = snapshot["support_loss"]
        if taken:  # and what it does to the loss it descends
            rule_and_loss = rule + f", L_support {_number(support[0])} → {_number(support[-1])}"
        else:
            rule_and_loss = rule + f", L_support {_number(support[0])}"
        rule = next((r for r in (rule_and_loss, rule) if len(title) + len(r) <= width), "")
        _border(fit, title=title + rule,
                subtitle=legend_markup(fit.look, legend, width))

    def draw_side(self, snapshot: dict) -> None:
        """What both kinds share: the inner-step curve, the algorithm's panel and the settings."""
        now = time.monotonic()
        if not (self.running and self.ready) or now - self.curve_drawn_at >= CHART_INTERVAL or snapshot["inner_steps_taken"] != self.curve_taken:
            # while training the curve moves with every outer step: once a second is enough (the
            # fit keeps its five); an answer to a key is drawn at once
            self.curve_drawn_at, self.curve_taken = now, snapshot["inner_steps_taken"]
            self.query_one(InnerCurveChart).show_curves(snapshot)
        self.draw_algorithm(snapshot)
        compare = next((c["algorithm"] for c in snapshot["companions"] if c["role"] == "compare"), None)
        panel = self.query_one(SettingsPanel)  # a border subtitle has the width less its corners and "─ " either side
        _border(panel, subtitle=side_by_side(snapshot["companions"], max((panel.size.width or 32) - 6, 10)))
        shown = (tuple(snapshot["settings"].items()), compare)
        if shown != self.shown_settings:
            self.shown_settings = shown
            self.query_one(SettingsPanel).show(snapshot["settings"], compare)

    def learned_history(self) -> dict[str, list[float]]:
        """The learned scalars worth a sparkline (Alpha-MAML's alpha and beta, R2-D2's lambda) over the charted steps."""
        learned = self.records["learned"]
        names = [n for n in (learned[-1] if learned else {}) if "@" not in n and not n.startswith("lr.")]
        return {n: [r.get(n, float("nan")) for r in learned] for n in names[:4]}

    def sharpness_text(self, snapshot: dict) -> str:
        """The compact sharpness indicator (``α·λmax 2.75 → 1.9``) when it is about the task and theta on
        screen, else ""."""
        view = self.sharpness
        if view is None or view.get("task_number") != snapshot["task_number"] or (
                view.get("inner_steps_taken") != snapshot["inner_steps_taken"]):
            return ""
        return compact_sharpness(view)

    def draw_sharpness(self, snapshot: dict) -> None:
        """α·λmax beside the fit: under the curve of query loss per inner step (what repeating the step
        does), or on classification under the accuracy per inner step."""
        if snapshot.get("classification") is not None:
            self.fit_dirty = True  # draw_episode puts it on the accuracy chart
            return
        self.draw_algorithm(snapshot)

    def draw_algorithm(self, snapshot: dict) -> None:
        view = snapshot.get("algorithm_view") or ()
        self.set_class(bool(view), "has-algorithm-view")
        chart = self.query_one(InnerCurveChart)
        hint = "a: what it learned" if view and not self.has_class("roomy") else ""
        sharp = self.sharpness_text(snapshot) if snapshot.get("classification") is None else ""
        room = (chart.outer_size.width or 32) - 6
        visible = lambda markup: len(markup.replace("[b red]", "").replace("[b]", "").replace("[/]", ""))  # noqa: E731
        choices = [t for t in (f"{sharp} · a: learned" if sharp and hint else "", sharp, hint) if t]
        _border(chart, subtitle=next((t for t in choices if visible(t) <= room), ""))
        if view and self.has_class("roomy"):
            self.query_one(AlgorithmPanel).show(view, self.learned_history())

    def draw_charts(self) -> None:
        r = self.records
        key = (self.records_version, len(r["step"]))
        self.query_one(LossChart).show_series(
            [("before", r["step"], r["before"], "before"), ("after", r["step"], r["after"], "after")], key)
        self.query_one(GradientChart).show_series(
            [("meta", r["step"], r["meta"], "meta"), ("inner", r["step"], r["inner"], "inner")], key)

    # -- actions --------------------------------------------------------------------------------
    @property
    def engine(self):
        return self.app.engine

    def send(self, what: str, command: str, **arguments) -> bool:
        """Send a command to the engine if it can take one; otherwise say why on screen (nothing is
        queued to fire later by surprise). A new action clears the last message."""
        if not self.ready:
            if self.engine_down:
                self.set_message(f"the engine is down ({self.engine_down}), so {what} cannot run; press R to restart it", "error")
            else:
                self.set_message(f"the engine is still starting; {what} works once it is ready", "warning")
            return False
        self.set_message("")
        self.engine.send(command, **arguments)
        return True

    def action_inner_step(self) -> None:
        self.send("an inner step", "inner_step")

    def action_reset_adaptation(self) -> None:
        self.send("a reset", "reset_adaptation")

    def action_new_task(self) -> None:
        self.send("a new task", "new_task")

    def action_outer_step(self) -> None:
        self.send("an outer step", "outer_steps", count=1)

    def action_outer_burst(self) -> None:
        self.send("a burst of outer steps", "outer_steps", count=BURST)

    def action_toggle_run(self) -> None:
        if self.send("training", "pause" if self.running else "run"):
            self.running = not self.running
            self.redraw(status_only=True)

    def action_cycle_compare(self) -> None:
        current = self.compare_algorithm
        names = list(self.query_one(SettingsPanel).choices["algorithm"])  # those that run on this task family
        choices = [None, *[a for a in names if self.snapshot is None or a != self.snapshot["settings"]["algorithm"]]]
        following = choices[(choices.index(current) + 1) % len(choices)] if current in choices else None
        if self.send("comparing", "set_companion", role="compare", algorithm=following):
            self.app.save_preferences(compare=following)

    @property
    def compare_algorithm(self) -> str | None:
        if self.snapshot is None:
            return None
        return next((c["algorithm"] for c in self.snapshot["companions"] if c["role"] == "compare"), None)

    def action_toggle_baseline(self) -> None:
        present = self.snapshot is not None and any(c["role"] == "baseline" for c in self.snapshot["companions"])
        if self.send("the baseline", "set_companion", role="baseline", algorithm=None if present else "pretrain"):
            self.app.save_preferences(baseline=not present)

    def action_new_model(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.send("a new model", "new_model")

        if self.snapshot is not None and self.snapshot["step"] > 0:
            self.app.push_screen(ConfirmDialog(f"Throw away {self.snapshot['step']:,} outer steps of training and start a new model?"), answered)
        else:
            answered(True)

    def action_save(self) -> None:
        def chosen(path: str | None) -> None:
            if path:
                self.send("saving", "save", path=path)

        last = self.app.preferences.last_save
        folder = str(Path(last).parent) if last else "runs"
        default = f"{folder}/explorer-{time.strftime('%Y%m%d-%H%M%S')}"
        self.app.push_screen(PathDialog("Save a checkpoint into this run directory:", default), chosen)

    def action_open_run(self, role: str = "main") -> None:
        preferences = self.app.preferences

        def chosen(path: str | None) -> None:
            if path:
                self.app.save_preferences(last_open=path)
                self.send("opening a run", "load", path=path, role=role)

        title = "Open a run directory (or checkpoint file):" if role == "main" else "Open a run as the pretrained baseline:"
        default = preferences.last_open or (preferences.recent_runs[0] if preferences.recent_runs else "runs/")
        self.app.push_screen(PathDialog(title, default, recent=preferences.recent_runs), chosen)

    def action_open_baseline(self) -> None:
        self.action_open_run("baseline")

    def action_restart_engine(self) -> None:
        if self.engine.alive and self.ready and self.snapshot is not None:
            self.set_message("the engine is running; nothing to restart")
            return
        restoring = self.app.restart_engine(restore=self.autosaved_step is not None)
        self.ready, self.engine_down, self.snapshot = False, "", None
        self.set_message(f"restarting the engine on the model it autosaved at outer step {self.autosaved_step:,}"
                         if restoring else "restarting the engine")
        self.placeholder("starting engine…")
        self.query_one(StatusBar).update_status(state="starting engine…", message="")

    def action_algorithm_view(self) -> None:
        if self.snapshot is None:
            self.set_message("the engine is not ready yet")
            return
        self.app.push_screen(AlgorithmScreen(self, self.ascii_mode))

    def action_batch_view(self) -> None:
        if self.snapshot is None or not self.ready:
            self.send("the meta-batch view", "snapshot")  # says why (starting, down) when it cannot
            if self.snapshot is None and self.ready:
                self.set_message("no model is open: l opens a run, m starts a new one")
            return
        if self.snapshot.get("classification") is not None:
            self.set_message("the meta-batch view draws regression tasks' curves; a classification episode is the "
                             "main picture (n draws another)", "warning")
            return
        self.app.push_screen(BatchScreen(self, self.ascii_mode, self.present))

    def action_gradient_view(self) -> None:
        if self.snapshot is None or not self.ready:
            self.send("the meta-gradient view", "snapshot")  # says why (starting, down) when it cannot
            if self.snapshot is None and self.ready:
                self.set_message("no model is open: l opens a run, m starts a new one")
            return
        self.app.push_screen(GradientScreen(self))

    def action_toggle_unseen(self) -> None:
        episode = self.snapshot.get("classification") if self.snapshot is not None else None
        if episode is None:
            self.set_message("unseen classes belong to a classification family: pick digits (or omniglot) as the task")
            return
        unseen = episode.get("split") != "test"
        if self.send("unseen classes", "episode_split", split="test" if unseen else "train"):
            self.set_message("episodes now come from the meta-test classes, never trained on" if unseen else
                             "episodes now come from the meta-train classes again")

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.BINDINGS))

    async def action_quit(self) -> None:
        unsaved = self.snapshot.get("unsaved_steps", 0) if self.snapshot is not None and self.ready else 0
        if not unsaved:
            await self.app.action_quit()
            return

        async def answered(choice: str | None) -> None:
            if choice == "discard":
                await self.app.action_quit()
            elif choice == "save":
                self.quitting = True
                self.action_save()

        self.app.push_screen(QuitDialog(f"{unsaved:,} outer steps of training are not saved. Save them before "
                                        "quitting, discard them, or cancel? (They are also kept in the autosave.)"), answered)

    # -- settings -------------------------------------------------------------------------------
    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id is None or not event.select.id.startswith("setting-") or event.value is Select.NULL:
            return
        self.pick_setting(event.select.id.removeprefix("setting-"), str(event.value))

    def pick_setting(self, key: str, value: str) -> None:
        """A person picked ``value`` for ``key`` (in the panel or the palette)."""
        if self.snapshot is None:
            return  # the panel is still showing placeholders, not picks
        if key == "compare":
            if value == (self.compare_algorithm or "off"):
                return
            if self.send("comparing", "set_companion", role="compare", algorithm=None if value == "off" else value):
                self.app.save_preferences(compare=None if value == "off" else value)
            return
        current = as_text(self.snapshot["settings"].get(key, ""))
        if current == value:
            return
        changes = {key: value}
        other_kind = key == "task" and self.task_kind(value) != self.task_kind(current)  # another network's shape
        if (key in self.snapshot.get("fresh_settings", FRESH_SETTINGS) or other_kind) and self.snapshot["step"] > 0:
            def answered(yes: bool | None) -> None:
                if yes:
                    self.send("a new setting", "set_settings", changes=changes)
                else:  # put the panel back to what the engine still has
                    self.shown_settings = None
                    self.query_one(SettingsPanel).show(self.snapshot["settings"], self.compare_algorithm)

            what = {"algorithm": "algorithm", "hidden": "model", "task": "task family", "ways": "number of ways"}.get(
                key, f"{key.replace('_', ' ')} of {self.snapshot['settings']['algorithm']}")
            self.app.push_screen(ConfirmDialog(f"Changing the {what} to {value} starts a new model and throws away "
                                               f"{self.snapshot['step']:,} outer steps of training. Go ahead?"), answered)
            return
        self.send("a new setting", "set_settings", changes=changes)
