"""The engine's one exception family: every failure the engine itself diagnoses is a
:class:`MamlTuiError` whose message is one sentence a person can act on, so a script or notebook
can ``except engine.MamlTuiError`` and print ``str(error)`` (no stack from inside torch).

* :class:`ConfigError` (also a ``ValueError``): a setting, flag or config field out of range.
* :class:`RunError` (``engine.checkpoint.RunError``; also a ``ValueError``): a run directory or checkpoint that
  cannot be used, or that another process is writing.
* ``engine.trainer.DivergedError`` (also a ``RuntimeError``): training blew up; the last good
  checkpoint is kept.
"""

from __future__ import annotations


class MamlTuiError(Exception):
    """Base of every error the engine raises on purpose; the message is one sentence."""


class ConfigError(MamlTuiError, ValueError):
    """A setting out of range or of the wrong type."""


class RunError(MamlTuiError, ValueError):
    """A run directory or checkpoint that cannot be used; the message is one clear sentence."""


def shown(value, most: int = 60) -> str:
    """A value from a file or a flag as it goes into one sentence: one line, at most ``most``
    characters, a tensor by its kind and shape (its repr spans lines)."""
    if type(value).__name__ == "Tensor":  # no torch import here: this module stays torch-free
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= most else text[:most - 1] + "…"
