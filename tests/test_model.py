"""The functional MLP: batched forward and the closed-form backward against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import engine


def test_default_model_is_finns_1_40_40_1_relu():
    model = engine.MLP()
    params = model.init(torch.Generator().manual_seed(0))
    assert model.sizes == (1, 40, 40, 1) and model.activation == "relu"
    assert {n: tuple(v.shape) for n, v in params.items()} == {
        "layer0.weight": (1, 40), "layer0.bias": (40,), "layer1.weight": (40, 40),
        "layer1.bias": (40,), "layer2.weight": (40, 1), "layer2.bias": (1,),
    }
    assert model.num_parameters() == 1761


def test_forward_matches_torch_nn():
    model = engine.MLP(hidden=(5, 7), activation="tanh")
    params = model.init(torch.Generator().manual_seed(0))
    x = torch.randn(11, 1)
    expected = x
    for i in range(3):
        expected = nnf.linear(expected, params[f"layer{i}.weight"].T, params[f"layer{i}.bias"])
        expected = torch.tanh(expected) if i < 2 else expected
    torch.testing.assert_close(model.forward(params, x), expected)


def test_per_task_parameters_equal_separate_forwards():
    model = engine.MLP(hidden=(6,))
    generator = torch.Generator().manual_seed(0)
    per_task = [model.init(generator) for _ in range(3)]
    stacked = {n: torch.stack([p[n] for p in per_task]) for n in model.names}
    x = torch.randn(3, 4, 1)
    out = model.forward(stacked, x)
    for t in range(3):
        torch.testing.assert_close(out[t], model.forward(per_task[t], x[t]))


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("head_only", [False, True])
def test_closed_form_gradients_equal_autograd(activation, head_only):
    model = engine.MLP(hidden=(9, 7), activation=activation)
    params = {n: v.double().requires_grad_() for n, v in model.init(torch.Generator().manual_seed(0)).items()}
    x, y = torch.randn(3, 5, 1, dtype=torch.float64), torch.randn(3, 5, 1, dtype=torch.float64)
    loss, grads = model.loss_and_gradients(params, x, y, head_only=head_only)
    for t in range(3):
        reference = nnf.mse_loss(model.forward(params, x[t]), y[t])
        torch.testing.assert_close(loss[t], reference)
        names = model.head_names if head_only else model.names
        expected = torch.autograd.grad(reference, [params[n] for n in names])
        for name, g in zip(names, expected):
            torch.testing.assert_close(grads[name][t], g)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation"):
        engine.MLP(activation="swish2")
