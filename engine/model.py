"""The functional MLP every algorithm adapts: parameters are a plain ``dict[str, Tensor]``.

``MLP.forward(params, x)`` works for one shared parameter set (weights ``(in, out)``) and for a
batch of per-task parameter sets (weights ``(tasks, in, out)``) alike, so adapted parameters
never need module cloning. Weights are stored ``(in, out)`` so a layer is ``x @ W + b`` with no
transpose. ``MLP.loss_and_gradients`` is the hand-derived backward pass of the per-task MSE for
the activations whose derivative is a function of their output (relu, tanh, sigmoid, identity):
it is built from ordinary differentiable ops, so autograd can differentiate *through* it, which
makes second-order MAML exact and cheap. ``engine.functional`` checks it against ``torch.func``
in the tests and falls back to ``torch.func.grad`` for every other activation.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor

Params = dict[str, Tensor]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
}


INITS = ("torch", "finn")


def _derivative_from_output(name: str, h: Tensor) -> Tensor | None:
    """d act / d z written in terms of the activation's output h (None if not expressible)."""
    if name == "relu":
        return (h > 0).to(h.dtype)  # the mask carries no gradient, exactly like autograd's relu
    if name == "tanh":
        return 1 - h * h
    if name == "sigmoid":
        return h * (1 - h)
    return None


class MLP:
    """A fully connected network ``in -> hidden... -> out`` with a functional interface."""

    def __init__(self, hidden: Iterable[int] = (40, 40), activation: str = "relu", in_features: int = 1, out_features: int = 1, init: str = "torch"):
        if init not in INITS:
            raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
        self.init_scheme = init
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.sizes = (in_features, *self.hidden, out_features)
        self.num_layers = len(self.sizes) - 1
        self.names = [f"layer{i}.{kind}" for i in range(self.num_layers) for kind in ("weight", "bias")]
        self.head_names = self.names[-2:]
        self.has_closed_form_gradient = _derivative_from_output(activation, torch.ones(1)) is not None
        self._act = _ACTIVATIONS[activation]

    def __repr__(self) -> str:
        return f"MLP({'-'.join(map(str, self.sizes))}, {self.activation})"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for i in range(self.num_layers):
            out[f"layer{i}.weight"] = (self.sizes[i], self.sizes[i + 1])
            out[f"layer{i}.bias"] = (self.sizes[i + 1],)
        return out

    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes().values())

    def init(self, generator: torch.Generator, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Params:
        """Seeded initial parameters.

        ``torch``: PyTorch's ``nn.Linear`` default, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases.
        ``finn``: the MAML reference code's, weights from a normal with std 0.01 truncated at two
        standard deviations and zero biases.
        """
        device = generator.device if device is None else torch.device(device)
        params = {}
        for name, shape in self.shapes().items():
            fan_in = self.sizes[int(name[5:].split(".")[0])]
            if self.init_scheme == "finn":
                if name.endswith("bias"):
                    params[name] = torch.zeros(shape, device=device, dtype=dtype)
                else:
                    value = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                    params[name] = torch.fmod(value, 2.0) * 0.01  # cheap truncation to [-2, 2] std
            else:
                bound = 1.0 / math.sqrt(fan_in)
                params[name] = torch.rand(shape, generator=generator, device=device, dtype=dtype) * (2 * bound) - bound
        return params

    # -- forward --------------------------------------------------------------------------------
    def _layer(self, h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if weight.dim() == 3:  # per-task weights (tasks, in, out), h (tasks, points, in)
            if h.dim() == 2:
                h = h.unsqueeze(0).expand(weight.shape[0], -1, -1)
            return torch.baddbmm(bias.unsqueeze(-2), h, weight)
        if h.dim() == 2:
            return torch.addmm(bias, h, weight)
        # shared weights, batched inputs: one matmul over all tasks' points
        if bias.dim() == 1:
            return torch.addmm(bias, h.reshape(-1, h.shape[-1]), weight).view(*h.shape[:-1], weight.shape[-1])
        return h @ weight + bias.unsqueeze(-2)

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Predictions for ``x`` of shape (points, in) or (tasks, points, in)."""
        h = x
        for i in range(self.num_layers):
            h = self._layer(h, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
            if i < self.num_layers - 1:
                h = self._act(h)
        return h

    __call__ = forward

    # -- closed-form backward -------------------------------------------------------------------
    def loss_and_gradients(self, params: Params, x: Tensor, y: Tensor, head_only: bool = False) -> tuple[Tensor, Params]:
        """Per-task MSE (tasks,) and its gradient w.r.t. every parameter, each (tasks, *shape).

        ``x`` and ``y`` are (tasks, points, dim). Parameters may be shared or per-task. The result
        is built from differentiable ops: differentiate it again for second-order meta-gradients.
        With ``head_only`` only the output layer's gradient is formed (ANIL).
        """
        activations = [x]  # inputs of each layer, (tasks, points, width)
        h = x
        last = self.num_layers - 1
        for i in range(self.num_layers):
            h = self._layer(h, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
            if i < last:
                h = self._act(h)
                activations.append(h)
        residual = h - y  # (tasks, points, out)
        count = residual.shape[-2] * residual.shape[-1]
        loss = residual.square().mean(dim=(-2, -1))  # (tasks,)
        delta = residual * (2.0 / count)  # d loss / d output, (tasks, points, out)
        grads: Params = {}
        for i in range(last, -1, -1):
            inputs = activations[i]
            grads[f"layer{i}.weight"] = torch.bmm(inputs.transpose(-2, -1), delta)
            grads[f"layer{i}.bias"] = delta.sum(dim=-2)
            if i == 0 or (head_only and i == last):
                break
            weight = params[f"layer{i}.weight"]
            back = torch.bmm(delta, weight.transpose(-2, -1)) if weight.dim() == 3 else delta @ weight.t()
            if self.activation == "relu":
                # relu's own backward kernel: one op, and (correctly) no second derivative
                delta = torch.ops.aten.threshold_backward(back, inputs.detach(), 0)
            else:
                delta = back * _derivative_from_output(self.activation, inputs)
        return loss, grads


def mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per task: (tasks, points, dim) -> (tasks,)."""
    return ((prediction - target) ** 2).mean(dim=(-2, -1))
