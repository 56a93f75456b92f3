"""The meta-test protocol: step 0 is theta, the CI is 1.96 std / sqrt(N), tasks are seeded."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf

import engine
from engine.evaluate import evaluate


def test_evaluation_follows_the_protocol():
    model = engine.MLP(hidden=(16, 16))
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.02)
    params = model.init(torch.Generator().manual_seed(0))
    result = evaluate(algorithm, params, "sinusoid", shots=5, steps=3, tasks=50, query=20, seed=7)
    assert result.steps == [0, 1, 2, 3] and result.tasks == 50 and result.inner_lr == 0.02
    family = engine.make_task_family("sinusoid")
    batch = family.sample(50, 5, 20, torch.Generator().manual_seed(7))
    per_task = torch.stack([nnf.mse_loss(model.forward(params, batch.x_query[t]), batch.y_query[t]) for t in range(50)]).double()
    assert result.mean[0] == pytest.approx(float(per_task.mean()), rel=1e-5)
    assert result.ci95[0] == pytest.approx(1.96 * float(per_task.std()) / math.sqrt(50), rel=1e-4)
    assert result.mean[3] < result.mean[0]
    again = evaluate(algorithm, params, "sinusoid", shots=5, steps=3, tasks=50, query=20, seed=7)
    assert again == result
    override = evaluate(algorithm, params, "sinusoid", shots=5, steps=3, tasks=50, query=20, seed=7, inner_lr=0.001)
    assert override.inner_lr == 0.001 and override.mean[0] == result.mean[0] and override.mean[3] != result.mean[3]


def test_chunked_evaluation_equals_one_batch():
    model = engine.MLP(hidden=(8,))
    algorithm = engine.make_algorithm("anil", model)
    params = model.init(torch.Generator().manual_seed(0))
    whole = evaluate(algorithm, params, tasks=30, steps=2)
    chunked = evaluate(algorithm, params, tasks=30, steps=2, chunk=7)
    for a, b in zip(whole.mean, chunked.mean):
        assert a == pytest.approx(b, rel=1e-6)


def test_bad_arguments_are_refused():
    model = engine.MLP(hidden=(4,))
    algorithm = engine.make_algorithm("maml", model)
    params = model.init(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        evaluate(algorithm, params, shots=0)
    with pytest.raises(ValueError):
        evaluate(algorithm, params, inner_lr=-1.0)


def test_a_diverged_task_is_counted_and_left_out_of_mean_ci_and_median():
    from engine.evaluate import summarise

    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, float("inf"), 3.0, 5000.0], [float("nan")] * 4], dtype=torch.float64)
    bound = torch.full((4,), 100.0, dtype=torch.float64)
    clean, blown, lost = summarise(losses, bound)
    assert clean.diverged == 0 and clean.mean == pytest.approx(2.5) and clean.median == pytest.approx(2.0)  # torch: lower median
    assert clean.ci95 == pytest.approx(1.96 * float(torch.tensor([1.0, 2, 3, 4]).std()) / 2)
    assert blown.diverged == 2 and blown.mean == pytest.approx(2.0) and blown.ci95 == pytest.approx(1.96 * math.sqrt(2) / math.sqrt(2))
    assert lost.diverged == 4 and lost.mean is lost.ci95 is lost.median is None


def test_a_blowing_up_evaluation_stays_finite_and_strict_json():
    import json

    model = engine.MLP(hidden=(16, 16))
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.02)
    params = model.init(torch.Generator().manual_seed(0))
    result = evaluate(algorithm, params, "sinusoid", shots=5, steps=4, tasks=40, query=10, inner_lr=3.0)
    assert result.diverged[0] == 0 and result.diverged[-1] > 0  # a rate of 3 blows every task up
    assert all(v is None or math.isfinite(v) for v in result.mean + result.ci95 + result.median)
    json.dumps(result.to_dict(), allow_nan=False)  # raises on NaN or Infinity
    assert "100 times" in result.diverged_rule


def test_the_divergence_bound_is_a_hundred_times_the_targets_mean_square():
    targets = torch.tensor([[[1.0], [3.0]], [[0.1], [0.1]]])  # two tasks, one of tiny amplitude
    bound = engine.MeanSquaredError().divergence_bound(targets)
    assert bound.shape == (2,) and torch.allclose(bound, torch.full((2,), 100 * (1 + 9 + 0.01 + 0.01) / 4))
