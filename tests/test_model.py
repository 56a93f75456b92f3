"""The functional MLP: batched forward and the closed-form backward against autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import engine
from engine.fast_mlp import mse_gradients
from engine.functional import InnerLoop
from engine.losses import MeanSquaredError


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


SUBSETS = {
    "all": None,
    "head": lambda model: model.head_names,
    "weights only": lambda model: [n for n in model.names if n.endswith("weight")],
    "middle bias": lambda model: ["layer1.bias"],
}


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("subset", sorted(SUBSETS))
def test_closed_form_gradients_equal_autograd(activation, subset):
    model = engine.MLP(hidden=(9, 7), activation=activation)
    names = tuple(model.names if SUBSETS[subset] is None else SUBSETS[subset](model))
    params = {n: v.double().requires_grad_() for n, v in model.init(torch.Generator().manual_seed(0)).items()}
    x, y = torch.randn(3, 5, 1, dtype=torch.float64), torch.randn(3, 5, 1, dtype=torch.float64)
    loop = InnerLoop(names=names, rates=())
    loss, grads = mse_gradients(model, MeanSquaredError(), params, x, y, loop, 0, create_graph=True)
    assert set(grads) == set(names)
    for t in range(3):
        reference = nnf.mse_loss(model.forward(params, x[t]), y[t])
        torch.testing.assert_close(loss[t], reference)
        expected = torch.autograd.grad(reference, [params[n] for n in names])
        for name, g in zip(names, expected):
            torch.testing.assert_close(grads[name][t], g)


def test_context_model_appends_the_context_to_every_input():
    base = engine.MLP(hidden=(6,), in_features=3)
    model = engine.ContextModel(base, 2)
    assert model.in_features == 1 and model.names[-1] == "context" and model.head_names == base.head_names
    params = model.init(torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, 1)
    context = torch.randn(4, 2)
    out = model.forward({**params, "context": context}, x)
    for t in range(4):
        joined = torch.cat([x[t], context[t].expand(5, 2)], dim=1)
        torch.testing.assert_close(out[t], base.forward(params, joined))
    shared = model.forward({**params, "context": context[0]}, x[0])
    torch.testing.assert_close(shared, out[0])


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="unknown activation"):
        engine.MLP(activation="swish2")
