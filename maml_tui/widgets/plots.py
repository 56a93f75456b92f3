"""The explorer's plots, drawn with plotext through textual-plotext's ``PlotextPlot``.

Each plot redraws only when it is given different data, downsamples long series to its own width,
and keeps non-finite numbers (a diverging run) from breaking the drawing. Every series has a
glyph of its own as well as a colour (``looks.py``), in ``--ascii`` and ``--present`` too, and the
legends show them. Losses and norms are drawn on a log scale with their real values on the axis
(0.1, 1, 10), and outer steps with round ticks (0, 20k, 40k).

``Chart`` turns plotext's character matrix straight into Textual strips instead of going through
an ANSI string that is parsed back (what ``PlotextPlot.render`` does): the same picture for about
a third of the CPU, which is CPU the engine keeps while training live.
"""

from __future__ import annotations

import math
from typing import Sequence

from plotext._utility import colors_to_ansi
from rich.ansi import AnsiDecoder
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual_plotext import PlotextPlot

from maml_tui.widgets.looks import Look

SHOWN_STEPS = 4  # adapted curves drawn at once: the newest steps, older ones fading (normal mode only)
ROLE_KINDS = {"compare": "compare", "baseline": "baseline"}


def downsample(xs: Sequence[float], ys: Sequence[float], points: int) -> tuple[list[float], list[float]]:
    """At most ``points`` (x, y) pairs: bucket means of the finite values, in order."""
    pairs = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
    if len(pairs) <= points or points < 2:
        return [p[0] for p in pairs], [p[1] for p in pairs]
    size = len(pairs) / points
    out_x, out_y = [], []
    for bucket in range(points):
        chunk = pairs[int(bucket * size):max(int((bucket + 1) * size), int(bucket * size) + 1)]
        out_x.append(chunk[-1][0])
        out_y.append(sum(p[1] for p in chunk) / len(chunk))
    return out_x, out_y


def _clamp(values: Sequence[float], low: float, high: float) -> list[float]:
    return [min(max(v, low), high) if math.isfinite(v) else high for v in values]


class Chart(PlotextPlot):
    """A PlotextPlot that knows the ascii mode, skips identical redraws and counts its draws."""

    def __init__(self, *, ascii_mode: bool = False, present: bool = False, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.ascii_mode = ascii_mode
        self.mode = "ascii" if ascii_mode else ("present" if present else "normal")
        self.draws = 0  # times new data was plotted
        self.renders = 0  # times the plot was rendered to the screen
        self._drawn_key: object = None

    _strips: list[Strip] | None = None
    _styles: dict[str, Style] = {}

    def refresh(self, *regions, **options):
        self._strips = None
        return super().refresh(*regions, **options)

    def render_line(self, y: int) -> Strip:
        width, height = self.size
        if self._strips is None or len(self._strips) != height or (self._strips and self._strips[0].cell_length != width):
            self._strips = self._build_strips(width, height)
        return self._strips[y] if 0 <= y < len(self._strips) else Strip.blank(width)

    def _build_strips(self, width: int, height: int) -> list[Strip]:
        self.renders += 1
        if width < 1 or height < 1:
            return []
        plot = self.plt
        plot.plotsize(width, height)
        plot._set_size(width, height)  # as PlotextPlot.render does: plotsize alone does not stick
        plot.theme(self._get_plotext_theme_name(self.app.theme))
        plot._set_sizes()
        plot._build_matrix()
        matrix = plot.monitor.matrix
        strips = []
        for row in list(matrix.Rows)[::-1]:
            markers, fulls, styles, backs = matrix.marker[row], matrix.fullground[row], matrix.style[row], matrix.background[row]
            segments, run, key = [], [], None
            for col in range(len(markers)):
                cell = (fulls[col], styles[col], backs[col])
                if cell != key and run:
                    segments.append(Segment("".join(run), self._style(key)))
                    run = []
                key = cell
                run.append(markers[col])
            if run:
                segments.append(Segment("".join(run), self._style(key)))
            strips.append(Strip(segments).adjust_cell_length(width))
        return strips[:height] + [Strip.blank(width)] * (height - len(strips))

    @classmethod
    def _style(cls, colours: tuple) -> Style:
        key = repr(colours)
        style = cls._styles.get(key)
        if style is None:
            decoded = AnsiDecoder().decode_line(colors_to_ansi(*colours) + "x")
            style = decoded.spans[0].style if decoded.spans else Style()
            style = style if isinstance(style, Style) else Style.parse(str(style))
            cls._styles[key] = style
        return style

    @property
    def look(self) -> Look:
        """Markers and colours for this mode on the app's current theme."""
        try:
            dark = self.app.current_theme.dark
        except Exception:  # not mounted yet
            dark = True
        return Look(self.mode, dark)

    @property
    def points(self) -> int:
        """How many x positions the plot can show (braille has two per cell)."""
        return max(8, (self.size.width - 8) * (2 if self.mode == "normal" else 1))

    def begin(self, key: object) -> bool:
        """Start a redraw unless ``key`` (the data, the size and the theme) is what is already drawn."""
        key = (key, self.size.width, self.size.height, self.look)
        if key == self._drawn_key:
            return False
        self._drawn_key = key
        self.draws += 1
        self.plt.clear_data()
        self.plt.clear_figure()
        return True

    def label_rows(self) -> int:
        """How many y labels fit with a free row between them (the plot is the height less its axes)."""
        return max(2, (self.size.height - 3) // 2)

    def placeholder(self, text: str) -> None:
        if self.begin(("placeholder", text)):
            self.plt.title(text)
            self.refresh()


def set_border(widget, title: str | None = None, subtitle: str | None = None) -> None:
    """Set a border title or subtitle only when it changes: Textual repaints the whole widget on
    every assignment, which while training (five fit draws a second) costs the engine CPU."""
    shown = widget.__dict__.setdefault("_borders_shown", {})
    for name, value in (("border_title", title), ("border_subtitle", subtitle)):
        if value is not None and shown.get(name) != value:
            shown[name] = value
            setattr(widget, name, value)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def fit_range(snapshot: dict, lines: Sequence[Sequence[float]]) -> tuple[float, float, bool]:
    """The fit's y-range: the truth and the points, widened to take in every drawn prediction up to
    twice the data's span either side; True when some prediction goes beyond even that (it is then
    drawn against the border and the legend says it is clipped)."""
    anchors = _finite([*snapshot["truth"], *snapshot["support_y"], *snapshot["query_y"]]) or [0.0]
    low, high = min(anchors), max(anchors)
    span = max(high - low, 1.0)
    values = _finite([v for line in lines for v in line])
    low_reach, high_reach = low - 2 * span, high + 2 * span
    clipped = any(v < low_reach or v > high_reach for v in values) or any(
        not (isinstance(v, (int, float)) and math.isfinite(v)) for line in lines for v in line)
    low = max(min([low, *values]), low_reach)
    high = min(max([high, *values]), high_reach)
    pad = 0.08 * max(high - low, 1.0)
    return low - pad, high + pad, clipped


class FitPlot(Chart):
    """The true function, the support and query points, theta's prediction and the adapted ones."""

    def show_fit(self, snapshot: dict | None) -> list[tuple[str, str, str]]:
        """Draw the snapshot; returns the legend of what is drawn: (kind, label, short label)."""
        if snapshot is None:
            return []
        look = self.look
        predictions = snapshot["predictions"]
        newest = len(predictions) - 1
        companions = snapshot["companions"]
        drawn = [predictions[0], predictions[newest], *(c["prediction"] for c in companions)]
        low, high, clipped = fit_range(snapshot, drawn)
        legend = [("truth", "truth", "truth"), ("support", "support", "sup"), ("query", "query", "qry"), ("theta", "θ", "θ")]
        if newest:
            legend.append(("adapted", f"θ′ step {newest}", f"θ′{newest}"))
        for companion in companions:
            legend.append((ROLE_KINDS.get(companion["role"], "compare"), f"{companion['algorithm']} @{companion['step']:,}",
                           companion["algorithm"][:8]))
        if clipped:
            legend.append(("clipped", "clipped at the border", "clipped"))
        if not self.begin((snapshot["step"], snapshot["task_number"], newest, predictions[-1][:3],
                           tuple(c["prediction"][:3] for c in companions))):
            return legend
        plt = self.plt
        x = snapshot["grid_x"]
        plt.plot(x, snapshot["truth"], color=look.colour("truth"), marker=look.marker("truth"))
        if look.fades_older_steps:
            for s in range(max(1, newest - SHOWN_STEPS + 1), newest):
                plt.plot(x, _clamp(predictions[s], low, high), color=look.colour("older"), marker=look.marker("older"))
        plt.plot(x, _clamp(predictions[0], low, high), color=look.colour("theta"), marker=look.marker("theta"))
        for companion in companions:
            kind = ROLE_KINDS.get(companion["role"], "compare")
            plt.plot(x, _clamp(companion["prediction"], low, high), color=look.colour(kind), marker=look.marker(kind))
        if newest:  # drawn last of the curves: the latest step stands out on top
            plt.plot(x, _clamp(predictions[newest], low, high), color=look.colour("adapted"), marker=look.marker("adapted"))
        plt.scatter(snapshot["query_x"], snapshot["query_y"], color=look.colour("query"), marker=look.marker("query"))
        plt.scatter(snapshot["support_x"], snapshot["support_y"], color=look.colour("support"), marker=look.marker("support"))
        plt.ylim(low, high)
        plt.xlim(x[0], x[-1])
        self.refresh()
        return legend


class TaskPlot(Chart):
    """One task of the meta-batch (the small multiples): truth, support points, theta and theta'."""

    def show_task(self, grid_x: Sequence[float], task: dict) -> bool:
        """Draw ``task`` (an engine ``BatchTask``); True when something was plotted anew."""
        look = self.look
        low, high, _ = fit_range({"truth": task["truth"], "support_y": task["support_y"], "query_y": []},
                                 [task["before"], task["after"]])
        if not self.begin((tuple(task["support_x"][:3]), tuple(task["after"][:4]), tuple(task["before"][:4]))):
            return False
        plt = self.plt
        plt.plot(grid_x, task["truth"], color=look.colour("truth"), marker=look.marker("truth"))
        plt.plot(grid_x, _clamp(task["before"], low, high), color=look.colour("theta"), marker=look.marker("theta"))
        plt.plot(grid_x, _clamp(task["after"], low, high), color=look.colour("adapted"), marker=look.marker("adapted"))
        plt.scatter(task["support_x"], task["support_y"], color=look.colour("support"), marker=look.marker("support"))
        plt.ylim(low, high)
        plt.xlim(grid_x[0], grid_x[-1])
        plt.xticks([])
        plt.yticks([])
        plt.frame(False)  # small multiples: every cell for the curves
        self.refresh()
        return True


def _step_label(step: float) -> str:
    """A compact outer-step count for an axis: 950, 12.5k, 70k."""
    if step < 1000:
        return f"{step:.0f}"
    if step < 10_000:
        return f"{step / 1000:.1f}".rstrip("0").rstrip(".") + "k"
    return f"{step / 1000:.0f}k"


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick positions (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not high > low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda c: abs(math.log(c / raw)))  # the nearest round step
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def value_label(value: float) -> str:
    """A loss or norm as a person reads it: 0.001, 0.05, 1, 20, 3k, 1e+06."""
    if value >= 1e5 or value < 1e-3:
        return f"{value:.0e}"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def log_ticks(low: float, high: float, most: int = 6) -> tuple[list[float], list[str]]:
    """At most ``most`` ticks for log10 data in [low, high], labelled with the real values (0.1, 1,
    10). Never more than the rows can hold apart: plotext drops colliding labels, and which one
    it keeps is not the same from one process to the next."""
    decades = list(range(math.floor(low), math.ceil(high) + 1))
    positions = [float(d) for d in decades if low - 1e-9 <= d <= high + 1e-9]
    if len(positions) < 2:  # less than a decade: 1, 2 and 5 times its powers of ten
        positions = [math.log10(m) + d for d in decades for m in (1, 2, 5) if low - 1e-9 <= math.log10(m) + d <= high + 1e-9]
    if len(positions) > most >= 2:  # too many for the height: evenly spread, both ends kept
        positions = [positions[round(i * (len(positions) - 1) / (most - 1))] for i in range(most)]
    return positions, [value_label(10 ** p) for p in positions]


class MetricChart(Chart):
    """Named series against the outer step, on a log scale; series are (label, xs, ys, kind)."""

    def show_series(self, series: list[tuple[str, Sequence[float], Sequence[float], str]], key: object) -> None:
        if not self.begin(key):
            return
        plt, look = self.plt, self.look
        drawn, low, high, y_low, y_high = False, math.inf, -math.inf, math.inf, -math.inf
        for _, xs, ys, kind in series:
            xs, ys = downsample(xs, [math.log10(y) if y > 0 and math.isfinite(y) else math.nan for y in ys], self.points)
            if xs:
                plt.plot(xs, ys, color=look.colour(kind), marker=look.marker(kind))
                drawn = True
                low, high = min(low, xs[0]), max(high, xs[-1])
                y_low, y_high = min(y_low, *ys), max(y_high, *ys)
        if not drawn:
            plt.title("no outer steps yet")
        else:
            if high > low:
                ticks = [t for t in nice_ticks(low, high) if low <= t <= high]
                plt.xticks(ticks, [_step_label(t) for t in ticks])  # outer steps are counts, not floats
            if y_high - y_low < 0.3:  # a nearly flat series still gets two labelled ticks
                y_low, y_high = y_low - 0.15, y_high + 0.15
            plt.ylim(y_low, y_high)
            positions, labels = log_ticks(y_low, y_high, self.label_rows())
            plt.yticks(positions, labels)
            plt.xlabel("outer step")
        self.refresh()


class LossChart(MetricChart):
    """Query loss before and after adaptation over outer steps."""


class GradientChart(MetricChart):
    """Meta-gradient norm and inner-gradient norm over outer steps."""


class InnerCurveChart(Chart):
    """Query loss after 0..S inner steps on the current task (one curve per learner), log scale."""

    def show_curves(self, snapshot: dict | None) -> None:
        if snapshot is None:
            return
        look = self.look
        curves = [("curve", snapshot["curve"])] + [(ROLE_KINDS.get(c["role"], "compare"), c["curve"]) for c in snapshot["companions"]]
        taken = snapshot["inner_steps_taken"]
        if not self.begin((tuple(tuple(c[1]) for c in curves), taken, snapshot["settings"]["inner_steps"])):
            return
        plt = self.plt
        logs = [[math.log10(v) if v > 0 and math.isfinite(v) else math.nan for v in curve] for _, curve in curves]
        finite = [v for curve in logs for v in curve if math.isfinite(v)]
        y_low, y_high = (min(finite), max(finite)) if finite else (-1.0, 1.0)
        if y_high - y_low < 0.3:
            y_low, y_high = y_low - 0.15, y_high + 0.15
        for (kind, _), curve in zip(curves, logs):
            steps = [s for s, v in enumerate(curve) if math.isfinite(v)]
            plt.plot(steps, [curve[s] for s in steps], color=look.colour(kind), marker=look.marker(kind))
        trained = snapshot["settings"]["inner_steps"]
        if 0 < trained < len(snapshot["curve"]):  # the step count meta-training used
            plt.vline(trained, color=look.colour("trained"))
            plt.text("trained", trained + 0.15, y_high, color=look.colour("trained"))
        if taken < len(logs[0]) and math.isfinite(logs[0][taken]):
            plt.scatter([taken], [logs[0][taken]], color=look.colour("point"), marker=look.marker("point"))
        plt.ylim(y_low, y_high + 0.05 * (y_high - y_low))
        positions, labels = log_ticks(y_low, y_high, self.label_rows())
        plt.yticks(positions, labels)
        steps = len(snapshot["curve"]) - 1
        plt.xticks(list(range(0, steps + 1, max(1, steps // 5))))
        plt.xlabel("inner steps")
        self.refresh()


def legend_markup(look: Look, entries: Sequence[tuple[str, str, str]], width: int) -> str:
    """The legend in at most ``width`` cells: full labels if they fit, short ones otherwise, and
    short ones set tight against their glyphs (``-truth osup``) when even those do not."""
    for index, gap in ((1, " "), (2, " "), (2, "")):
        plain = sum(len(entry[index]) + (0 if entry[0] == "clipped" else len(look.glyph(entry[0])) + len(gap)) + 1
                    for entry in entries) - 1  # "clipped" is a word of warning, with no glyph
        if plain <= width or gap == "":
            return " ".join(f"[b $warning]{entry[index]}[/]" if entry[0] == "clipped"
                            else f"[{look.hex(entry[0])}]{look.glyph(entry[0])}{gap}{entry[index]}[/]" for entry in entries)
    return ""
