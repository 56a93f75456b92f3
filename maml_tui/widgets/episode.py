"""The classification view: one few-shot episode drawn in the terminal, and its accuracy per inner step.

A classification family has no curve to fit, so in its place the main screen shows the episode
(:class:`EpisodeView`): every support image with its episode label and class name, and a few query
images, each with its predicted class probabilities before adaptation (theta) and after the inner
steps taken so far (theta'), one pair of bars per label, the true label marked. Images are drawn
with the upper half block ``▀``: its foreground is the upper pixel and its background the lower,
so one cell shows two pixels and an 8x8 digit is 8 cells wide and 4 high, square on screen. In
``--ascii`` mode shades are characters of :data:`ASCII_RAMP` (one per pixel, and when the height
allows it one row per pixel too, else one row per two pixels, averaged), and bars are ``|``
(theta) and ``#`` (theta').

:class:`AccuracyChart` sits beside the outer-loop charts: the query-set accuracy after 0..S inner
steps on the current episode, one bar per step (the steps taken bright), with chance (1/N) marked.

Both render from the snapshot's plain ``classification`` entry at their current size, so a resize
lays them out again; nothing here imports the engine.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from maml_tui.widgets.looks import Look

ASCII_RAMP = " .:-=+*#%@"
EIGHTHS = " ▁▂▃▄▅▆▇█"
LABEL_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"
PAPER, INK = 18, 255  # the grey of a 0 pixel and of a 1 pixel: ink bright on dark paper, on any theme

Line = list[tuple[str, Style | None]]


def label_char(label: int) -> str:
    """One character per episode label (0-9, then a-z, then ?), so a bar pair has one under it."""
    return LABEL_CHARS[label] if 0 <= label < len(LABEL_CHARS) else "?"


def short_name(name: str, ascii_mode: bool = False) -> str:
    """A class name that fits under an image: ``7 turned 90°`` is ``7↻90`` (``7r90`` in --ascii),
    an Omniglot ``Alphabet/character05`` its character's part."""
    name = name.rsplit("/", 1)[-1].replace("°", "")
    return name.replace(" turned ", "r" if ascii_mode else "↻")


def _grey(value: float) -> tuple[int, int, int]:
    level = round(PAPER + (INK - PAPER) * min(max(value, 0.0), 1.0))
    return level, level, level


def image_lines(pixels: Sequence[Sequence[float]], ascii_mode: bool, tall: bool = False) -> list[Line]:
    """An image as lines of cells: half blocks in colour (two pixel rows per line); ascii shades, one
    line per pixel row when ``tall``, else the mean of two rows per line."""
    rows = [list(r) for r in pixels]
    if not rows:
        return []
    if len(rows) % 2 and not (ascii_mode and tall):
        rows.append([0.0] * len(rows[0]))
    lines: list[Line] = []
    if ascii_mode:
        pairs = [(r,) for r in rows] if tall else [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]
        for group in pairs:
            values = [sum(v) / len(v) for v in zip(*group)]
            lines.append([("".join(ASCII_RAMP[min(len(ASCII_RAMP) - 1, int(v * len(ASCII_RAMP)))] for v in values), None)])
        return lines
    for i in range(0, len(rows), 2):
        lines.append([("▀", Style(color=f"rgb{_grey(u)}", bgcolor=f"rgb{_grey(l)}")) for u, l in zip(rows[i], rows[i + 1])])
    return lines


def bar_cells(value: float, height: int, ascii_mode: bool, fill: str = "#") -> list[str]:
    """A vertical bar of ``value`` in [0, 1] over ``height`` cells, top cell first."""
    value = min(max(value if math.isfinite(value) else 0.0, 0.0), 1.0) * height
    cells = []
    for row in range(height):  # row 0 is the bottom
        part = min(max(value - row, 0.0), 1.0)
        if ascii_mode:
            cells.append(fill if part >= 0.75 else "." if part >= 0.25 else " ")
        else:
            cells.append(EIGHTHS[round(part * 8)])
    return cells[::-1]


def _width(line: Line) -> int:
    return sum(len(text) for text, _ in line)


def _pad(line: Line, width: int) -> Line:
    return line + [(" " * (width - _width(line)), None)] if _width(line) < width else line


def _text(value: str, width: int, style: Style | None = None) -> Line:
    return [(value[:width].ljust(width), style)]


class Layout:
    """Where everything of an episode goes at one size (and whether it fits at all)."""

    def __init__(self, episode: dict, width: int, height: int, ascii_mode: bool, tall: bool):
        support, query = episode["support"], episode["query"]
        sample = (support or query)[0]["pixels"] if (support or query) else [[0.0]]
        self.tall = tall
        self.image_w = len(sample[0])
        self.image_h = len(sample) if tall else (len(sample) + 1) // 2
        ways = max(int(episode["ways"]), 1)
        self.pair = 2 if ways * 2 + self.image_w + 1 <= max(width, 1) else 1  # theta and theta' bars, or theta' alone
        self.item_w = self.image_w + 1 + ways * self.pair
        self.support_per_row = max(1, (width + 1) // (self.image_w + 1))
        self.query_per_row = max(1, (width + 2) // (self.item_w + 2))
        block = self.image_h + 1  # an image and its label line
        self.support_rows = min(math.ceil(len(support) / self.support_per_row), max(1, (height - block) // block))
        self.query_rows = max(0, (height - self.support_rows * block - 1) // block)
        self.names_line = height - self.support_rows * block - self.query_rows * block - 1 >= 1
        self.fits = self.item_w <= width and height >= 2 * block + 1


def layout_for(episode: dict, width: int, height: int, ascii_mode: bool) -> Layout:
    """In --ascii, a line per pixel row when that shows as many images as two rows a line would."""
    compact = Layout(episode, width, height, ascii_mode, tall=False)
    if ascii_mode:
        tall = Layout(episode, width, height, True, tall=True)
        shown = lambda layout: (min(len(episode["support"]), layout.support_rows * layout.support_per_row),  # noqa: E731
                                min(len(episode["query"]), layout.query_rows * layout.query_per_row))
        if tall.fits and shown(tall) >= shown(compact):
            return tall
    return compact


def episode_text(episode: dict, width: int, height: int, look: Look, ascii_mode: bool) -> Text:
    """The episode at ``width`` x ``height`` cells: support images in rows, then query images with bars."""
    if width < 4 or height < 2:
        return Text("")
    layout = layout_for(episode, width, height, ascii_mode)
    if not layout.fits:
        return Text("too little room for the episode's images", style="italic")
    names = episode["class_names"]
    ways = int(episode["ways"])
    muted = Style(dim=True)
    truth = Style(color=look.hex("truth"), bold=True)
    before_style, after_style = Style(color=look.hex("before")), Style(color=look.hex("adapted"))
    wrong = Style(color=look.hex("support"), bold=True)
    lines: list[Line] = []

    # the support set: as many as fit, one of every class first when not all do
    support = list(episode["support"])
    room = layout.support_rows * layout.support_per_row
    if len(support) > room:
        by_label: dict[int, list] = {}
        for item in support:
            by_label.setdefault(item["label"], []).append(item)
        support = [group[r] for r in range(max(map(len, by_label.values()))) for group in by_label.values() if r < len(group)]
    shown_support, hidden = support[:room], len(support) - room
    for start in range(0, len(shown_support), layout.support_per_row):
        row = shown_support[start:start + layout.support_per_row]
        pictures = [image_lines(item["pixels"], ascii_mode, layout.tall) for item in row]
        for y in range(layout.image_h):
            line: Line = []
            for i, picture in enumerate(pictures):
                line += ([(" ", None)] if i else []) + (picture[y] if y < len(picture) else [(" " * layout.image_w, None)])
            lines.append(line)
        label_line: Line = []
        for i, item in enumerate(row):
            label = f"{label_char(item['label'])} {short_name(names[item['label']], ascii_mode)}"
            label_line += ([(" ", None)] if i else []) + _text(label, layout.image_w, muted)
        lines.append(label_line)

    # the query images and their probabilities: theta's bar, then theta''s, per label
    probabilities = episode["probabilities"]
    first, last = probabilities[0], probabilities[-1]
    count = layout.query_rows * layout.query_per_row
    queries = list(enumerate(episode["query"]))[:count]
    if ascii_mode:
        header = "query: p(label) theta | theta' #" if layout.pair == 2 else "query: p(label) theta' #"
    else:
        header = "query: p(label), θ then θ′" if layout.pair == 2 else "query: p(label) after, θ′"
    more = [f"{len(episode['query']) - len(queries)} more queries"] if len(queries) < len(episode["query"]) else []
    if hidden > 0:
        more.append(f"{hidden} more support")
    more_text = (" · " + ", ".join(more)) if more else ""
    header += more_text if len(header) + len(more_text) <= width else ""  # whole, or not at all
    lines.append(_text(header, width, muted))
    for start in range(0, len(queries), layout.query_per_row):
        row = queries[start:start + layout.query_per_row]
        blocks: list[list[Line]] = []
        for index, item in row:
            picture = image_lines(item["pixels"], ascii_mode, layout.tall)
            label = item["label"]
            bars = []
            for c in range(ways):
                if layout.pair == 2:
                    bars.append((bar_cells(first[index][c], layout.image_h, ascii_mode, "|"), before_style))
                bars.append((bar_cells(last[index][c], layout.image_h, ascii_mode, "#"), after_style))
            block: list[Line] = []
            for y in range(layout.image_h):
                line = (picture[y] if y < len(picture) else [(" " * layout.image_w, None)]) + [(" ", None)]
                line += [(cells[y], style) for cells, style in bars]
                block.append(line)
            predicted = max(range(ways), key=lambda c: last[index][c])
            mark = ("ok" if ascii_mode else "✓") if predicted == label else ("no" if ascii_mode else "✗")
            caption = _text(f"is {label_char(label)} {mark}", layout.image_w, truth if predicted == label else wrong)
            caption.append((" ", None))
            for c in range(ways):
                caption.append((label_char(c).ljust(layout.pair), truth if c == label else muted))
            block.append(caption)
            blocks.append(block)
        for y in range(layout.image_h + 1):
            line = []
            for i, block in enumerate(blocks):
                line += ([("  ", None)] if i else []) + _pad(block[y], layout.item_w)
            lines.append(line)

    if layout.names_line and len(lines) < height:  # the labels' classes in full, as far as they go
        if ascii_mode:
            key = ", ".join(f"{label_char(i)} {name.replace('°', '')}" for i, name in enumerate(names))
            key = key if len(key) <= width else key[: width - 3] + "..."
        else:
            key = " · ".join(f"{label_char(i)} {name}" for i, name in enumerate(names))
            key = key if len(key) <= width else key[: width - 1] + "…"
        lines.append(_text(key, width, muted))
    text = Text(no_wrap=True, overflow="crop")
    for n, line in enumerate(lines[:height]):
        if n:
            text.append("\n")
        for value, style in line:
            text.append(value, style)
    return text


class _Drawn(Widget):
    """A widget that draws itself as text in the app's look (colours, presenter mode or --ascii)."""

    def __init__(self, *, ascii_mode: bool = False, present: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ascii_mode = ascii_mode
        self.mode = "ascii" if ascii_mode else ("present" if present else "normal")
        self.plain = ""  # the text last rendered, for tests and for a person's copy

    @property
    def look(self) -> Look:
        try:
            dark = self.app.current_theme.dark
        except Exception:
            dark = True
        return Look(self.mode, dark)


class EpisodeView(_Drawn):
    """The current episode, drawn from a snapshot's ``classification`` entry at the widget's size."""

    DEFAULT_CSS = "EpisodeView { height: 1fr; }"

    def __init__(self, *, ascii_mode: bool = False, present: bool = False, id: str | None = None) -> None:
        super().__init__(ascii_mode=ascii_mode, present=present, id=id)
        self.episode: dict[str, Any] | None = None
        self.draws = 0  # times new data was shown

    def show(self, episode: dict | None) -> None:
        if episode != self.episode:
            self.episode = episode
            self.draws += 1
            self.refresh()

    def render(self) -> Text:
        if self.episode is None:
            text = Text("")
        else:
            text = episode_text(self.episode, self.size.width, self.size.height, self.look, self.ascii_mode)
        self.plain = text.plain
        return text


def accuracy_text(curve: Sequence[float], taken: int, ways: int, width: int, height: int, look: Look,
                  ascii_mode: bool, others: Sequence[tuple[str, float]] = ()) -> Text:
    """Bars of the query accuracy after 0..S inner steps: a y scale of 0..100% when there is room,
    chance (1/N) as a dotted row, the steps taken bright and the rest dim, step numbers below. The
    learners trained beside (``others``: name and accuracy after the same steps) get a line on top."""
    steps = len(curve)
    if not steps or width < 3 or height < 3:
        return Text("")
    text = Text(no_wrap=True, overflow="crop")
    if others and height >= 6:
        percent = lambda v: f"{100 * v:.0f}%" if math.isfinite(v) else "—"  # noqa: E731
        line = " · ".join(f"{name} {percent(value)}" for name, value in others)
        text.append(("vs " + line)[:width] + "\n", Style(color=look.hex("compare")))
        height -= 1
    rows = height - 1  # the last line numbers the steps
    scale = 5 if width - 5 >= steps else 0  # "100% " beside the bars when they still fit
    bar_w = max(1, (width - scale) // steps)
    gap = 1 if bar_w >= 3 else 0
    bar_w -= gap
    chance_row = min(rows - 1, int((1.0 / max(ways, 1)) * rows))  # counted from the bottom
    taken_style, later_style = Style(color=look.hex("adapted")), Style(color=look.hex("older"), dim=True)
    theta_style = Style(color=look.hex("before"))
    chance_style = Style(color=look.hex("trained"))
    columns = [bar_cells(v, rows, ascii_mode, "#") for v in curve]
    for y in range(rows):
        if y:
            text.append("\n")
        from_bottom = rows - 1 - y
        if scale:
            label = "100%" if y == 0 else "  0%" if from_bottom == 0 else " 50%" if from_bottom == rows // 2 else ""
            text.append(label.ljust(scale), Style(dim=True))
        for s, cells in enumerate(columns):
            cell = cells[y]
            style = theta_style if s == 0 else taken_style if s <= taken else later_style
            if cell == " " and from_bottom == chance_row:
                text.append(("-" if ascii_mode else "┄") * bar_w, chance_style)
            else:
                text.append(cell * bar_w, style)
            if gap:
                text.append(" ")
    text.append("\n" + " " * scale)
    every = max(1, math.ceil(3 / (bar_w + gap)))  # numbers at least a space apart
    numbers = ""
    for s in range(steps):
        cell = (str(s) if s % every == 0 else "").ljust(bar_w + gap)
        numbers += cell if len(numbers) + len(cell) <= width - scale else ""
    text.append(numbers, Style(dim=True))
    return text


class AccuracyChart(_Drawn):
    """Query accuracy per inner step on the current episode (classification runs only)."""

    DEFAULT_CSS = "AccuracyChart { height: 1fr; }"

    def __init__(self, *, ascii_mode: bool = False, present: bool = False, id: str | None = None) -> None:
        super().__init__(ascii_mode=ascii_mode, present=present, id=id)
        self.data: tuple | None = None

    def show(self, curve: Sequence[float], taken: int, ways: int, others: Sequence[tuple[str, float]] = ()) -> None:
        data = (tuple(curve), taken, ways, tuple(others))
        if data != self.data:
            self.data = data
            self.refresh()

    def render(self) -> Text:
        if self.data is None:
            text = Text("")
        else:
            curve, taken, ways, others = self.data
            text = accuracy_text(curve, taken, ways, self.size.width, self.size.height, self.look, self.ascii_mode, others)
        self.plain = text.plain
        return text
