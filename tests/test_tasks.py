"""Task families: shapes, ranges, seeded reproducibility and ground truth."""

from __future__ import annotations

import math

import pytest
import torch

import engine
from engine.registry import TASKS, is_classification

TASK_FAMILIES = [n for n in TASKS if not is_classification(n)]  # the episodes of classification: test_classification.py


@pytest.mark.parametrize("name", sorted(TASK_FAMILIES))
def test_batches_have_the_documented_shapes_and_truth(name):
    family = engine.make_task_family(name)
    batch = family.sample(7, 5, 3, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == batch.y_support.shape == (7, 5, 1)
    assert batch.x_query.shape == batch.y_query.shape == (7, 3, 1)
    assert all(v.shape == (7,) for v in batch.params.values())
    low, high = family.x_range
    assert batch.x_support.min() >= low and batch.x_support.max() <= high
    torch.testing.assert_close(family.truth(batch.x_support, batch.params), batch.y_support)
    one = batch.task(2)
    torch.testing.assert_close(family.truth(one.x_query, one.params), batch.y_query[2:3])


@pytest.mark.parametrize("name", sorted(TASK_FAMILIES))
def test_the_same_seed_gives_the_same_tasks(name):
    family = engine.make_task_family(name)
    first = family.sample(4, 3, 2, torch.Generator().manual_seed(5))
    second = family.sample(4, 3, 2, torch.Generator().manual_seed(5))
    third = family.sample(4, 3, 2, torch.Generator().manual_seed(6))
    assert torch.equal(first.x_support, second.x_support) and torch.equal(first.y_query, second.y_query)
    assert not torch.equal(first.x_support, third.x_support)


def test_sinusoid_follows_finn_et_al():
    batch = engine.make_task_family("sinusoid").sample(4000, 1, 1, torch.Generator().manual_seed(0))
    amplitude, phase = batch.params["amplitude"], batch.params["phase"]
    assert 0.1 <= amplitude.min() and amplitude.max() <= 5.0 and amplitude.mean() == pytest.approx(2.55, abs=0.1)
    assert 0.0 <= phase.min() and phase.max() <= math.pi
    expected = amplitude.view(-1, 1, 1) * torch.sin(batch.x_support - phase.view(-1, 1, 1))
    torch.testing.assert_close(batch.y_support, expected)


def test_ranges_are_configurable_and_checked():
    family = engine.make_task_family("sinusoid", amplitude=(1.0, 1.0), x=[0.0, 1.0])
    batch = family.sample(10, 4, 0, torch.Generator().manual_seed(0))
    assert torch.all(batch.params["amplitude"] == 1.0) and batch.x_support.max() <= 1.0
    with pytest.raises(ValueError, match="no range 'frequency'"):
        engine.make_task_family("sinusoid", frequency=(1, 2))
    with pytest.raises(ValueError, match=r"must be \[low, high\]"):
        engine.make_task_family("sinusoid", amplitude=5)
    with pytest.raises(ValueError, match="low <= high"):
        engine.make_task_family("linear", slope=(3, -3))
    with pytest.raises(ValueError, match="unknown task family"):
        engine.make_task_family("spiral")


def test_quadratic_and_sine_line_mixtures():
    quadratic = engine.make_task_family("quadratic").sample(2000, 1, 0, torch.Generator().manual_seed(0)).params
    magnitude = quadratic["scale"].abs()
    assert 0.02 <= magnitude.min() and magnitude.max() <= 0.15
    assert 0.4 < (quadratic["scale"] > 0).double().mean() < 0.6
    mixture = engine.make_task_family("sine_line").sample(2000, 1, 0, torch.Generator().manual_seed(0)).params
    assert 0.45 < mixture["is_sine"].mean() < 0.55


def test_harmonic_frequencies_and_float64():
    family = engine.make_task_family("harmonic", dtype=torch.float64)
    batch = family.sample(500, 2, 2, torch.Generator().manual_seed(0))
    assert batch.x_support.dtype == torch.float64
    assert 5.0 <= batch.params["frequency"].min() and batch.params["frequency"].max() <= 7.0
