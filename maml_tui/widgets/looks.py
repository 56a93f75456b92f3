"""How every series is drawn: a glyph of its own as well as a colour, in every mode and theme.

A curve told apart by colour alone is lost in ``--ascii``, in a monochrome terminal, on a
projector that washes colours out, and for a person who does not see them. Each series here has a
marker (what plotext draws along it) and the glyph the legends show for it, chosen so that no two
series share one; colours differ too, by theme (a near-white theta on a dark background, a near
black one on a light background). ``--present`` uses heavier markers and pure, high-contrast
colours for a projector.

=========  ==============  =======  =========
series     normal          ascii    present
=========  ==============  =======  =========
truth      braille line    ``-``    ``•``
theta      ``·``           ``.``    ``·``
theta'     ``•`` (latest)  ``#``    ``█``
older      braille, faint  (none)   (none)
support    ``o``           ``o``    ``●``
query      ``x``           ``x``    ``✕``
compare    ``+``           ``+``    ``✚``
baseline   ``*``           ``*``    ``✱``
=========  ==============  =======  =========
"""

from __future__ import annotations

from dataclasses import dataclass

MODES = ("normal", "ascii", "present")
KINDS = ("truth", "theta", "adapted", "older", "support", "query", "compare", "baseline",
         "before", "after", "meta", "inner", "curve", "point", "trained")

MARKERS = {
    "normal": {"truth": "braille", "theta": "·", "adapted": "•", "older": "braille", "support": "o", "query": "x",
               "compare": "+", "baseline": "*", "before": "·", "after": "•", "meta": "•", "inner": "·",
               "curve": "•", "point": "◆", "trained": "│"},
    "ascii": {"truth": "-", "theta": ".", "adapted": "#", "older": "", "support": "o", "query": "x",
              "compare": "+", "baseline": "*", "before": ".", "after": "#", "meta": "#", "inner": ".",
              "curve": "#", "point": "@", "trained": "|"},
    "present": {"truth": "•", "theta": "·", "adapted": "█", "older": "", "support": "●", "query": "✕",
                "compare": "✚", "baseline": "✱", "before": "·", "after": "█", "meta": "█", "inner": "·",
                "curve": "█", "point": "◆", "trained": "│"},
}
GLYPHS = {"braille": "⠒", "": ""}  # what a legend shows for a marker that is not a character

Colour = tuple[int, int, int]
COLOURS: dict[str, dict[str, Colour]] = {
    "dark": {"truth": (90, 205, 110), "theta": (225, 225, 225), "adapted": (40, 200, 255), "older": (70, 110, 170),
             "support": (255, 85, 85), "query": (255, 160, 40), "compare": (195, 120, 255), "baseline": (255, 120, 200),
             "before": (200, 200, 200), "after": (40, 200, 255), "meta": (195, 120, 255), "inner": (255, 160, 40),
             "curve": (40, 200, 255), "point": (255, 255, 255), "trained": (150, 150, 150)},
    "light": {"truth": (0, 130, 40), "theta": (40, 40, 40), "adapted": (0, 100, 200), "older": (150, 175, 215),
              "support": (200, 0, 0), "query": (200, 100, 0), "compare": (130, 40, 200), "baseline": (200, 30, 130),
              "before": (70, 70, 70), "after": (0, 100, 200), "meta": (130, 40, 200), "inner": (200, 100, 0),
              "curve": (0, 100, 200), "point": (0, 0, 0), "trained": (120, 120, 120)},
    "present-dark": {"truth": (0, 255, 0), "theta": (255, 255, 255), "adapted": (0, 255, 255), "older": (0, 0, 0),
                     "support": (255, 40, 40), "query": (255, 170, 0), "compare": (255, 0, 255), "baseline": (255, 255, 0),
                     "before": (255, 255, 255), "after": (0, 255, 255), "meta": (255, 0, 255), "inner": (255, 170, 0),
                     "curve": (0, 255, 255), "point": (255, 255, 255), "trained": (200, 200, 200)},
    "present-light": {"truth": (0, 120, 0), "theta": (0, 0, 0), "adapted": (0, 0, 230), "older": (255, 255, 255),
                      "support": (220, 0, 0), "query": (190, 90, 0), "compare": (160, 0, 160), "baseline": (150, 110, 0),
                      "before": (0, 0, 0), "after": (0, 0, 230), "meta": (160, 0, 160), "inner": (190, 90, 0),
                      "curve": (0, 0, 230), "point": (0, 0, 0), "trained": (90, 90, 90)},
}


@dataclass(frozen=True)
class Look:
    """Markers and colours for one mode on one theme."""

    mode: str = "normal"
    dark: bool = True

    def marker(self, kind: str) -> str:
        return MARKERS[self.mode][kind]

    def glyph(self, kind: str) -> str:
        marker = self.marker(kind)
        return GLYPHS.get(marker, marker)

    def colour(self, kind: str) -> Colour:
        palette = ("present-" if self.mode == "present" else "") + ("dark" if self.dark else "light")
        return COLOURS[palette][kind]

    def hex(self, kind: str) -> str:
        return "#%02x%02x%02x" % self.colour(kind)

    @property
    def fades_older_steps(self) -> bool:
        """Older adapted steps are drawn only where they cannot be taken for another series."""
        return self.mode == "normal"

    def legend(self, kind: str, label: str) -> str:
        """A legend entry: the series' glyph and label, in its colour (Textual markup)."""
        return f"[{self.hex(kind)}]{self.glyph(kind)} {label}[/]"
