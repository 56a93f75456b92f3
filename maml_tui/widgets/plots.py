"""The explorer's plots, drawn with plotext through textual-plotext's ``PlotextPlot``.

Each plot redraws only when it is given different data, downsamples long series to its own width,
and keeps non-finite numbers (a diverging run) from breaking the drawing. In ``--ascii`` mode
every series is drawn with plain characters instead of braille.

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

TRUTH, SUPPORT, QUERY, THETA = "green", "red", "orange", (128, 128, 128)
MAGENTA = (200, 90, 230)  # an RGB magenta: themes map the named one close to red
COMPANION_COLOURS = {"compare": MAGENTA, "baseline": (230, 160, 40)}
ADAPTED = [(40, 90, 160), (60, 130, 210), (80, 170, 240), (60, 200, 255)]  # older -> newest step
ASCII_MARKERS = {"line": ".", "support": "o", "query": "x", "point": "*"}
SHOWN_STEPS = 4  # adapted curves drawn at once: the newest steps, older ones fading


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

    def __init__(self, *, ascii_mode: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.ascii_mode = ascii_mode
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

    def marker(self, kind: str = "line") -> str:
        return ASCII_MARKERS[kind] if self.ascii_mode else ("braille" if kind == "line" else {"support": "o", "query": "x", "point": "●"}[kind])

    @property
    def points(self) -> int:
        """How many x positions the plot can show (braille has two per cell)."""
        return max(8, (self.size.width - 8) * (1 if self.ascii_mode else 2))

    def begin(self, key: object) -> bool:
        """Start a redraw unless ``key`` (the data and the size) is what is already drawn."""
        key = (key, self.size.width, self.size.height)
        if key == self._drawn_key:
            return False
        self._drawn_key = key
        self.draws += 1
        self.plt.clear_data()
        self.plt.clear_figure()
        return True

    def placeholder(self, text: str) -> None:
        if self.begin(("placeholder", text)):
            self.plt.title(text)
            self.refresh()


class FitPlot(Chart):
    """The true function, the support and query points, theta's prediction and the adapted ones."""

    def show_fit(self, snapshot: dict | None) -> None:
        if snapshot is None:
            return
        if not self.begin((snapshot["step"], snapshot["task_number"], snapshot["inner_steps_taken"],
                           snapshot["predictions"][-1][:3], tuple(c["prediction"][:3] for c in snapshot["companions"]))):
            return
        plt = self.plt
        x = snapshot["grid_x"]
        truth = snapshot["truth"]
        anchors = [*truth, *snapshot["support_y"]]
        low, high = min(anchors), max(anchors)
        span = max(high - low, 1.0)
        low, high = low - 0.35 * span, high + 0.35 * span
        line = self.marker("line")
        plt.plot(x, truth, color=TRUTH, marker=line)
        predictions = snapshot["predictions"]
        plt.plot(x, _clamp(predictions[0], low, high), color=THETA, marker=line)
        newest = len(predictions) - 1
        for s in range(max(1, newest - SHOWN_STEPS + 1), newest + 1):
            colour = ADAPTED[SHOWN_STEPS - 1 - (newest - s)]
            plt.plot(x, _clamp(predictions[s], low, high), color=colour, marker=line)
        for companion in snapshot["companions"]:
            plt.plot(x, _clamp(companion["prediction"], low, high), color=COMPANION_COLOURS.get(companion["role"], "cyan"), marker=line)
        plt.scatter(snapshot["query_x"], snapshot["query_y"], color=QUERY, marker=self.marker("query"))
        plt.scatter(snapshot["support_x"], snapshot["support_y"], color=SUPPORT, marker=self.marker("support"))
        plt.ylim(low, high)
        plt.xlim(x[0], x[-1])
        self.refresh()


def _step_label(step: float) -> str:
    """A compact outer-step count for an axis: 950, 12.5k, 70k."""
    if step < 1000:
        return f"{step:.0f}"
    return f"{step / 1000:.1f}k" if step < 10_000 else f"{step / 1000:.0f}k"


class MetricChart(Chart):
    """Named series against the outer step, on a log scale."""

    def show_series(self, series: list[tuple[str, Sequence[float], Sequence[float], object]], key: object) -> None:
        if not self.begin(key):
            return
        plt = self.plt
        drawn, low, high = False, math.inf, -math.inf
        for label, xs, ys, colour in series:
            xs, ys = downsample(xs, [math.log10(y) if y > 0 and math.isfinite(y) else math.nan for y in ys], self.points)
            if xs:
                plt.plot(xs, ys, color=colour, marker=self.marker("line"))
                drawn, low, high = True, min(low, xs[0]), max(high, xs[-1])
        if not drawn:
            plt.title("no outer steps yet")
        elif high > low:
            ticks = [low + (high - low) * k / 3 for k in range(4)]
            plt.xticks(ticks, [_step_label(t) for t in ticks])  # outer steps are counts, not floats
        self.refresh()


class LossChart(MetricChart):
    """Query loss before and after adaptation over outer steps."""


class GradientChart(MetricChart):
    """Meta-gradient norm and inner-gradient norm over outer steps."""


class InnerCurveChart(Chart):
    """Query loss after 0..S inner steps on the current task (one curve per learner)."""

    def show_curves(self, snapshot: dict | None) -> None:
        if snapshot is None:
            return
        curves = [("main", snapshot["curve"], "cyan")] + [
            (c["algorithm"], c["curve"], COMPANION_COLOURS.get(c["role"], "cyan")) for c in snapshot["companions"]]
        taken = snapshot["inner_steps_taken"]
        if not self.begin((tuple(tuple(c[1]) for c in curves), taken, snapshot["settings"]["inner_steps"])):
            return
        plt = self.plt
        finite = [v for _, curve, _ in curves for v in curve if math.isfinite(v)]
        ceiling = max(finite) * 1.1 if finite else 1.0
        for _, curve, colour in curves:
            plt.plot(list(range(len(curve))), _clamp(curve, 0.0, ceiling), color=colour, marker=self.marker("line"))
        trained = snapshot["settings"]["inner_steps"]
        if 0 < trained < len(snapshot["curve"]):
            plt.vline(trained, color=THETA)
        if taken < len(snapshot["curve"]):
            plt.scatter([taken], [min(snapshot["curve"][taken], ceiling)], color=ADAPTED[-1], marker=self.marker("point"))
        plt.ylim(0.0, ceiling)
        plt.xlabel("inner steps")
        self.refresh()
