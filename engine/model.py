"""Functional models on one small protocol: parameters are a plain ``dict[str, Tensor]``.

A model says which parameters it has (:attr:`Model.names`, :meth:`Model.shapes`), which of them
form the head (:attr:`Model.head_names`, what ANIL adapts), how to draw them
(:meth:`Model.init`, from an explicit generator) and how to predict (:meth:`Model.forward`).
Every parameter may be shared (its own shape, the meta-parameters theta) or per task (a leading
``tasks`` dimension, the adapted theta'), so adapted parameters never need module cloning.
``forward`` takes the inner step it is called at (``step``) so a model with per-step state
(MAML++'s per-step batch norm) can use it; models without such state ignore it.

Nothing outside this module assumes an MLP: the fast MLP kernels in ``engine.fast_mlp`` run only
on the plain :class:`MLP` itself (not a subclass, which may compute something else). :func:`make_model` builds a model from its config through
the registry.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor

Params = dict[str, Tensor]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
}
INITS = ("torch", "finn")


class Model:
    """The protocol every model follows (and the helpers they share)."""

    kind = "model"  # a short name for reports, e.g. "mlp"
    names: list[str] = []  # every parameter, in a fixed order
    head_names: list[str] = []  # the output layer's parameters
    in_features = 1
    out_features = 1

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def init(self, generator: torch.Generator, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Params:
        raise NotImplementedError

    def forward(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        """Predictions for ``x`` of shape (points, in) or (tasks, points, in)."""
        raise NotImplementedError

    def features(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        """The head's input (what ANIL's head and R2-D2's ridge solve see)."""
        raise NotImplementedError

    def __call__(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return self.forward(params, x, step)

    # -- shared helpers -------------------------------------------------------------------------
    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes().values())

    def is_batched(self, name: str, value: Tensor) -> bool:
        """True when ``value`` carries a leading tasks dimension."""
        return value.dim() > len(self.shapes()[name])

    def per_task(self, name: str, value: Tensor, tasks: int) -> Tensor:
        """``value`` with a tasks dimension (a view, when it was shared)."""
        return value if self.is_batched(name, value) else value.unsqueeze(0).expand(tasks, *value.shape)


class MLP(Model):
    """A fully connected network ``in -> hidden... -> out``; weights are stored ``(in, out)``."""

    kind = "mlp"

    def __init__(self, hidden: Iterable[int] = (40, 40), activation: str = "relu", in_features: int = 1,
                 out_features: int = 1, init: str = "torch"):
        if init not in INITS:
            raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.init_scheme = init
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.sizes = (self.in_features, *self.hidden, self.out_features)
        self.num_layers = len(self.sizes) - 1
        self.names = [f"layer{i}.{kind}" for i in range(self.num_layers) for kind in ("weight", "bias")]
        self.head_names = self.names[-2:]
        self.act = ACTIVATIONS[activation]

    def __repr__(self) -> str:
        return f"MLP({'-'.join(map(str, self.sizes))}, {self.activation})"

    def with_in_features(self, in_features: int) -> "MLP":
        """The same network with another input width (CAVIA widens it for its context)."""
        return MLP(self.hidden, self.activation, in_features, self.out_features, self.init_scheme)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for i in range(self.num_layers):
            out[f"layer{i}.weight"] = (self.sizes[i], self.sizes[i + 1])
            out[f"layer{i}.bias"] = (self.sizes[i + 1],)
        return out

    def init(self, generator: torch.Generator, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Params:
        """Seeded initial parameters.

        ``torch``: PyTorch's ``nn.Linear`` default, U(-1/sqrt(in), 1/sqrt(in)) for weights and biases.
        ``finn``: the MAML reference code's, weights from a normal with std 0.01 truncated at two
        standard deviations and zero biases.
        """
        device = generator.device if device is None else torch.device(device)
        params = {}
        for i in range(self.num_layers):
            for kind in ("weight", "bias"):
                name, shape = f"layer{i}.{kind}", self.shapes()[f"layer{i}.{kind}"]
                if self.init_scheme == "finn":
                    if kind == "bias":
                        params[name] = torch.zeros(shape, device=device, dtype=dtype)
                    else:
                        value = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                        params[name] = torch.fmod(value, 2.0) * 0.01  # cheap truncation to [-2, 2] std
                else:
                    bound = 1.0 / math.sqrt(self.sizes[i])
                    params[name] = torch.rand(shape, generator=generator, device=device, dtype=dtype) * (2 * bound) - bound
        return params

    # -- forward --------------------------------------------------------------------------------
    @staticmethod
    def layer(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``h @ weight + bias`` for shared or per-task parameters and 2-D or batched inputs."""
        if weight.dim() == 3:  # per-task weights (tasks, in, out), h (tasks, points, in)
            if h.dim() == 2:
                h = h.unsqueeze(0).expand(weight.shape[0], -1, -1)
            return torch.baddbmm(bias.unsqueeze(-2), h, weight)
        if h.dim() == 2:
            return torch.addmm(bias, h, weight)
        if bias.dim() == 1:  # shared weights, batched inputs: one matmul over all tasks' points
            return torch.addmm(bias, h.reshape(-1, h.shape[-1]), weight).view(*h.shape[:-1], weight.shape[-1])
        return h @ weight + bias.unsqueeze(-2)

    def _run(self, params: Params, x: Tensor, inputs: list[Tensor] | None, head: bool) -> Tensor:
        """The one forward loop; ``inputs`` collects every layer's input, ``head=False`` stops before the head."""
        h, last = x, self.num_layers - 1
        for i in range(self.num_layers if head else last):
            if inputs is not None:
                inputs.append(h)
            h = self.layer(h, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
            if i < last:
                h = self.act(h)
        return h

    def forward_recording(self, params: Params, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The output and every layer's input (the hand-derived backward in ``fast_mlp`` needs them)."""
        inputs: list[Tensor] = []
        return self._run(params, x, inputs, head=True), inputs

    def features(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return self._run(params, x, None, head=False)

    def forward(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return self._run(params, x, None, head=True)


class ContextModel(Model):
    """A model whose input is extended by context parameters (CAVIA, Zintgraf et al. 2019).

    The context ``(size,)`` or per task ``(tasks, size)`` is appended to every input point, so the
    wrapped model sees ``in + size`` features. The context is not a meta-parameter: the algorithm
    starts it at zero for every task and adapts only it.
    """

    kind = "context"
    CONTEXT = "context"

    def __init__(self, base: Model, size: int):
        if size < 1:
            raise ValueError(f"the context needs at least one parameter, got {size}")
        self.base, self.size = base, int(size)
        self.names = [*base.names, self.CONTEXT]
        self.head_names = list(base.head_names)
        self.in_features, self.out_features = base.in_features - self.size, base.out_features

    def __repr__(self) -> str:
        return f"ContextModel({self.base!r}, context={self.size})"

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {**self.base.shapes(), self.CONTEXT: (self.size,)}

    def init(self, generator, device=None, dtype=torch.float32) -> Params:
        return self.base.init(generator, device, dtype)  # the context starts at zero per task

    def _with_context(self, params: Params, x: Tensor) -> Tensor:
        context = params[self.CONTEXT]
        if context.dim() == 1:
            context = context.expand(*x.shape[:-1], self.size)
        else:  # (tasks, size) against (tasks, points, in)
            if x.dim() == 2:
                x = x.unsqueeze(0).expand(context.shape[0], -1, -1)
            context = context.unsqueeze(-2).expand(*x.shape[:-1], self.size)
        return torch.cat([x, context.to(x.dtype)], dim=-1)

    def forward(self, params, x, step=None):
        return self.base.forward(params, self._with_context(params, x), step)

    def features(self, params, x, step=None):
        return self.base.features(params, self._with_context(params, x), step)


class ImageMLP(MLP):
    """An :class:`MLP` on images: each ``(C, H, W)`` input is flattened into ``C*H*W`` features first.

    A subclass, so the hand-derived MLP kernels (which take flat inputs) never run on it."""

    kind = "mlp"
    with_in_features = None  # CAVIA's context appends to a flat input; an image has none to widen

    def __init__(self, hidden: Iterable[int] = (40, 40), activation: str = "relu", input_shape: tuple[int, ...] = (1, 8, 8),
                 out_features: int = 1, init: str = "torch"):
        self.input_shape = tuple(int(v) for v in input_shape)
        super().__init__(hidden, activation, math.prod(self.input_shape), out_features, init)

    def __repr__(self) -> str:
        return f"ImageMLP({'x'.join(map(str, self.input_shape))} -> {'-'.join(map(str, self.sizes[1:]))}, {self.activation})"

    def _flat(self, x: Tensor) -> Tensor:
        return x.flatten(-len(self.input_shape))

    def features(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return super().features(params, self._flat(x), step)

    def forward(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return super().forward(params, self._flat(x), step)


def make_model(config, in_features: int = 1, out_features: int = 1, input_shape: tuple[int, ...] | None = None) -> Model:
    """The model a :class:`~engine.config.ModelConfig` describes, for the task family's sizes
    (``input_shape``: the shape of one input when it is an image, ``(C, H, W)``)."""
    from engine.registry import model_class

    cls = model_class(config.kind)
    if getattr(cls, "images_only", False):
        if input_shape is None or len(input_shape) != 3:
            raise ValueError(f"the {config.kind} model takes images; pick an image task family such as digits")
        return cls(config.hidden, config.activation, input_shape, out_features, init=config.init)
    if input_shape is not None and len(input_shape) > 1 and cls is MLP:
        return ImageMLP(config.hidden, config.activation, input_shape, out_features, init=config.init)
    return cls(config.hidden, config.activation, in_features, out_features, init=config.init)
