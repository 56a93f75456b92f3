"""The algorithm panel: what the current algorithm has learned, live.

The engine describes an algorithm's own state as small tables (``ExplorerSnapshot.algorithm_view``:
MAML++'s learned rate per layer and inner step, CAVIA's context after each inner step on the task
on screen, Alpha-MAML's adapted inner and outer rates, Meta-SGD's per-entry rates, R2-D2's ridge
regulariser). The panel draws those tables and, for learned numbers logged over outer steps (the
``learned`` field of the records), a sparkline of their history, so a rate adapting by
hypergradient descent can be watched as it moves. It draws only plain numbers it is given.
"""

from __future__ import annotations

import io
import math
import re
from typing import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

BARS = "▁▂▃▄▅▆▇█"
ASCII_BARS = "_.-~=+*#"


def sparkline(values: Sequence[float], width: int, ascii_mode: bool = False) -> str:
    """``values`` (the newest last) as a ``width``-character strip of bars, bucket means."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or width < 1:
        return ""
    if len(finite) > width:
        size = len(finite) / width
        finite = [sum(chunk) / len(chunk) for chunk in
                  (finite[int(i * size):max(int((i + 1) * size), int(i * size) + 1)] for i in range(width))]
    bars = ASCII_BARS if ascii_mode else BARS
    low, high = min(finite), max(finite)
    span = high - low
    return "".join(bars[int((v - low) / span * (len(bars) - 1)) if span > 0 else len(bars) // 2] for v in finite)


def number(value: float) -> str:
    """At most six characters: 0.0123, 1.23, 123, 9.9e-4, -2e+5."""
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e3:
        return f"{value:.3g}" if abs(value) >= 1e-2 or value == 0 else f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def label(name: str) -> str:
    """A parameter name short enough for a narrow panel: layer0.weight -> L0 w."""
    return re.sub(r"layer(\d+)\.(weight|bias)", lambda m: f"L{m.group(1)} {m.group(2)[0]}", name)


def render_view(view: Sequence[dict], history: dict[str, list[float]] | None = None, width: int = 40,
                ascii_mode: bool = False) -> RenderableType:
    """The tables of an algorithm view and, for each of ``history``'s series, its sparkline."""
    parts: list[RenderableType] = []
    for section in view:
        # no rules and one space between columns: five steps of six-character numbers fit 40 cells
        table = Table(title=section["title"], title_justify="left", box=None, pad_edge=False, padding=(0, 0, 0, 1),
                      expand=False, title_style="bold", header_style="bold underline")
        table.add_column("", style="bold", no_wrap=True)
        for column in section["columns"]:
            table.add_column(column, justify="right", no_wrap=True)
        for name, values in section["rows"]:
            table.add_row(label(name), *(number(v) for v in values))
        parts.append(table)
    for name, values in (history or {}).items():
        if len(values) < 2:
            continue
        strip = sparkline(values, max(8, width - 24), ascii_mode)
        parts.append(Text.assemble((f"{name:>6} ", "bold"), strip, f" {number(values[-1])}"))
    if history and any(len(v) >= 2 for v in history.values()):
        parts.append(Text("over the charted outer steps, oldest left", style="dim"))
    return Group(*parts) if parts else Text("this algorithm has no learned state of its own to show", style="dim")


class AlgorithmPanel(Static):
    """Shows an algorithm view; ``show`` redraws only when the numbers changed."""

    def __init__(self, *, ascii_mode: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes)
        self.ascii_mode = ascii_mode
        self.draws = 0
        self.plain = ""  # what the panel says, as text (for tests and screen readers)
        self._key: object = None

    def show(self, view: Sequence[dict], history: dict[str, list[float]] | None = None) -> None:
        key = (repr(view), tuple((k, len(v), v[-1] if v else None) for k, v in (history or {}).items()), self.size.width)
        if key == self._key:
            return
        self._key = key
        self.draws += 1
        width = max(self.size.width, 30)
        renderable = render_view(view, history, width, self.ascii_mode)
        console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
        console.print(renderable)
        self.plain = console.file.getvalue()
        self.update(renderable)
