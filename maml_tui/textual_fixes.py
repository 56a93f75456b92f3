"""Work-arounds for Textual bugs that a long demo runs into, applied once when the explorer's app is imported.

``StylesCache.get_inner_outer`` (Textual 8.2 and earlier) is an instance method under
``functools.lru_cache(1024)``, so the cache is keyed by the ``StylesCache`` of every widget that
was ever drawn and keeps it alive, with all of that widget's rendered lines, after the widget is
gone (Textualize/textual#6665). Every opening of the help screen, the meta-batch view or a dialog
mounts fresh widgets, so the interface grew about 0.45 MiB per opening until the cache held 1,024
of them (some 9 MiB). The two styles it returns depend only on the two colours, so they are cached
here by the colours alone: Textual's own code computes them, and nothing of a widget is kept.

The patch is applied only while Textual still carries the bug (the method is an ``lru_cache``
wrapper); a fixed Textual is left as it is.
"""

from __future__ import annotations

from textual._styles_cache import StylesCache

CACHED = 1024  # colour pairs kept, as many as Textual's own cache; a theme uses a few dozen

_original = None  # Textual's own get_inner_outer, unwrapped from its lru_cache
_by_colours: dict = {}


def _get_inner_outer(self: StylesCache, base_background, background):
    """Textual's own computation, cached by the two colours alone (they are all it depends on)."""
    key = (base_background, background)
    styles = _by_colours.get(key)
    if styles is None:
        if len(_by_colours) >= CACHED:
            _by_colours.clear()
        styles = _by_colours[key] = _original(self, base_background, background)
    return styles


def needs_styles_cache_fix() -> bool:
    """Whether this Textual keys ``get_inner_outer``'s cache by the StylesCache instance (the leak)."""
    method = StylesCache.__dict__.get("get_inner_outer")
    return method is not _get_inner_outer and hasattr(method, "cache_clear") and hasattr(method, "__wrapped__")


def apply() -> bool:
    """Apply the work-arounds this Textual needs; True when one was applied now. Safe to call again."""
    global _original
    if not needs_styles_cache_fix():
        return False
    method = StylesCache.__dict__["get_inner_outer"]
    _original = method.__wrapped__
    method.cache_clear()  # drop the widgets it already holds
    _by_colours.clear()
    StylesCache.get_inner_outer = _get_inner_outer
    return True


apply()
