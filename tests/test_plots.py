"""The plots' arithmetic: log-scale ticks in real values, round outer-step ticks, the fit's range
that never silently clips a prediction, and a glyph of its own for every series in every mode."""

from __future__ import annotations

import math

import pytest

from maml_tui.widgets.looks import KINDS, MODES, Look
from maml_tui.widgets.plots import fit_range, log_ticks, nice_ticks, value_label


def test_log_ticks_are_labelled_with_real_values():
    positions, labels = log_ticks(math.log10(0.05), math.log10(30))
    assert labels == ["0.1", "1", "10"] and positions == [-1.0, 0.0, 1.0]
    positions, labels = log_ticks(math.log10(0.3), math.log10(0.9))  # less than a decade
    assert labels == ["0.5"] or labels[:2] == ["0.5", "1"] or "0.5" in labels
    assert all(math.isclose(10 ** p, float(label)) for p, label in zip(positions, labels))
    assert value_label(2500) == "2.5k" and value_label(0.0002) == "2e-04" and value_label(3e6) == "3e+06"


@pytest.mark.parametrize("low, high, expected", [(100, 70_000, [20_000, 40_000, 60_000]), (0, 10, [0, 5, 10]),
                                                  (3, 950, [200, 400, 600, 800])])
def test_outer_step_ticks_are_round(low, high, expected):
    assert [round(t) for t in nice_ticks(low, high)] == expected


def snapshot(truth, prediction):
    return {"truth": truth, "support_y": [0.0], "query_y": [0.0], "predictions": [prediction]}


def test_the_fit_range_takes_in_predictions_and_flags_what_it_cannot():
    inside = snapshot([-1.0, 1.0], [-3.0, 2.5])
    low, high, clipped = fit_range(inside, [[-3.0, 2.5]])
    assert low < -3.0 and high > 2.5 and not clipped  # drawn where it is, not as a plateau on the border
    far = snapshot([-1.0, 1.0], [0.0, 50.0])
    low, high, clipped = fit_range(far, [[0.0, 50.0]])
    assert clipped and high < 50.0  # beyond twice the data's span: drawn at the border, and said so
    assert fit_range(far, [[0.0, float("nan")]])[2]


@pytest.mark.parametrize("mode", MODES)
def test_every_fit_series_has_a_glyph_of_its_own(mode):
    look = Look(mode, dark=True)
    fit = ["truth", "theta", "adapted", "support", "query", "compare", "baseline"]
    glyphs = [look.glyph(kind) for kind in fit]
    assert all(glyphs) and len(set(glyphs)) == len(glyphs), glyphs
    if mode == "ascii":
        assert all(ord(ch) < 128 for ch in "".join(glyphs))
    for kind in KINDS:
        assert look.colour(kind) != Look(mode, dark=False).colour(kind) or kind == "older"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("width", [200, 40, 8])
def test_a_clipped_fit_says_so_in_its_legend_at_any_width(mode, width):
    """The "clipped" word has no glyph of its own; the legend crashed looking one up (found by the
    memory soak: a small-amplitude task whose prediction left twice the data's span)."""
    from maml_tui.widgets.plots import legend_markup

    entries = [("truth", "truth", "truth"), ("theta", "θ", "θ"), ("clipped", "clipped at the border", "clipped")]
    assert "clipped" in legend_markup(Look(mode), entries, width)
