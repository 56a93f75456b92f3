"""The convolutional network of few-shot image classification (Finn et al. 2017; Vinyals et al. 2016).

``conv4``: blocks of 3x3 convolution (64 filters by default, padding 1), batch norm, ReLU and
2x2 max-pooling, then a linear head on the flattened features. Pooling rounds up, so an 8x8
digit keeps a 1x1 map after four blocks and a 28x28 Omniglot character a 2x2 one.

It follows the model protocol of :mod:`engine.model`: parameters are a plain dict, each shared
or per task. A meta-batch ``x (tasks, points, C, H, W)`` runs through one ``torch.func.vmap``
over tasks (no Python loop), so per-task weights become one grouped convolution. Batch norm uses
each task's own batch statistics (as in MAML's reference code, at meta-training and meta-test
alike), so no task sees another's images and there are no running statistics to keep. With
``norm_steps = S`` the norm's scale and shift are per inner step, MAML++'s BNWB (Antoniou et al.
2019): step ``s`` uses set ``min(s, S - 1)``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import vmap

from engine.model import ACTIVATIONS, INITS, Model, Params

EPS = 1e-5


def pooled(size: int, blocks: int) -> int:
    """A side of the feature map after ``blocks`` 2x2 poolings that round up."""
    for _ in range(blocks):
        size = math.ceil(size / 2)
    return size


class Conv4(Model):
    """Blocks of conv 3x3 - batch norm - activation - max-pool 2x2, then a linear head."""

    kind = "conv4"
    images_only = True

    def __init__(self, hidden: Iterable[int] = (64, 64, 64, 64), activation: str = "relu",
                 input_shape: tuple[int, ...] = (1, 28, 28), out_features: int = 5, init: str = "torch",
                 norm_steps: int = 0):
        if init not in INITS:
            raise ValueError(f"unknown initialisation {init!r}; choose one of {', '.join(INITS)}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.channels = tuple(int(c) for c in hidden)
        if not self.channels:
            raise ValueError("the conv net needs at least one block")
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.input_shape) != 3:
            raise ValueError(f"the conv net takes (channels, height, width) images, got the shape {self.input_shape}")
        self.activation, self.act, self.init_scheme = activation, ACTIVATIONS[activation], init
        self.out_features = int(out_features)
        self.norm_steps = int(norm_steps)
        c, h, w = self.input_shape
        self.blocks = len(self.channels)
        self.map_size = (pooled(h, self.blocks), pooled(w, self.blocks))
        self.feature_size = self.channels[-1] * self.map_size[0] * self.map_size[1]
        self.in_features = c * h * w
        self._shapes: dict[str, tuple[int, ...]] = {}
        inputs = (c, *self.channels)
        for i, (cin, cout) in enumerate(zip(inputs, self.channels)):
            self._shapes[f"block{i}.conv.weight"] = (cout, cin, 3, 3)
            self._shapes[f"block{i}.conv.bias"] = (cout,)
            for s in self._norm_sets():
                self._shapes[f"block{i}.norm{s}.weight"] = (cout,)
                self._shapes[f"block{i}.norm{s}.bias"] = (cout,)
        self._shapes["head.weight"] = (self.feature_size, self.out_features)
        self._shapes["head.bias"] = (self.out_features,)
        self.names = list(self._shapes)
        self.head_names = ["head.weight", "head.bias"]

    def _norm_sets(self) -> list[str]:
        return [""] if self.norm_steps == 0 else [f".step{s}" for s in range(self.norm_steps)]

    def __repr__(self) -> str:
        per_step = f", norm per step x{self.norm_steps}" if self.norm_steps else ""
        return (f"Conv4({'x'.join(map(str, self.input_shape))} -> {'-'.join(map(str, self.channels))} -> "
                f"{self.feature_size} -> {self.out_features}{per_step})")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def init(self, generator: torch.Generator, device=None, dtype: torch.dtype = torch.float32) -> Params:
        """``torch``: PyTorch's defaults (conv and linear U(+-1/sqrt(fan_in)), norm scale 1, shift 0).
        ``finn``: MAML's reference code (Xavier-uniform convolutions, zero biases, a head drawn from
        N(0, 0.01) truncated at two standard deviations)."""
        device = generator.device if device is None else torch.device(device)
        uniform = lambda shape, bound: (torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1) * bound  # noqa: E731
        params: Params = {}
        for name, shape in self._shapes.items():
            if ".norm" in name:
                params[name] = (torch.ones if name.endswith("weight") else torch.zeros)(shape, device=device, dtype=dtype)
            elif name.startswith("block"):
                weight = self._shapes[name.replace(".bias", ".weight")]
                fan_in, fan_out = weight[1] * 9, weight[0] * 9
                if self.init_scheme == "finn":
                    params[name] = (uniform(shape, math.sqrt(6.0 / (fan_in + fan_out))) if name.endswith("weight")
                                    else torch.zeros(shape, device=device, dtype=dtype))
                else:
                    params[name] = uniform(shape, 1.0 / math.sqrt(fan_in))
            elif self.init_scheme == "finn":
                params[name] = (torch.fmod(torch.randn(shape, generator=generator, device=device, dtype=dtype), 2.0) * 0.01
                                if name.endswith("weight") else torch.zeros(shape, device=device, dtype=dtype))
            else:
                params[name] = uniform(shape, 1.0 / math.sqrt(self.feature_size))
        return params

    # -- forward --------------------------------------------------------------------------------
    def _norm_set(self, step: int | None) -> str:
        if self.norm_steps == 0:
            return ""
        return f".step{min(max(step or 0, 0), self.norm_steps - 1)}"

    def _features_one(self, params: Params, x: Tensor, step: int | None) -> Tensor:
        """One task: images (points, C, H, W) -> features (points, F)."""
        norm = self._norm_set(step)
        h = x
        for i in range(self.blocks):
            h = F.conv2d(h, params[f"block{i}.conv.weight"], params[f"block{i}.conv.bias"], padding=1)
            mean = h.mean(dim=(0, 2, 3), keepdim=True)  # this task's batch statistics
            var = (h - mean).square().mean(dim=(0, 2, 3), keepdim=True)
            scale = params[f"block{i}.norm{norm}.weight"].view(1, -1, 1, 1)
            shift = params[f"block{i}.norm{norm}.bias"].view(1, -1, 1, 1)
            h = (h - mean) * torch.rsqrt(var + EPS) * scale + shift
            h = F.max_pool2d(self.act(h), 2, ceil_mode=True)
        return h.flatten(1)

    def _forward_one(self, params: Params, x: Tensor, step: int | None) -> Tensor:
        return self._features_one(params, x, step) @ params["head.weight"] + params["head.bias"]

    def _batched(self, fn, params: Params, x: Tensor, step: int | None) -> Tensor:
        """``fn`` on one task, or vmapped over the tasks of ``x`` (tasks, points, C, H, W) and of per-task params."""
        params = {n: params[n] for n in self.names if n in params}  # an algorithm's own entries (R2-D2's lambda) stay outside
        batched = {n: 0 if self.is_batched(n, v) else None for n, v in params.items()}
        x_batched = x.dim() == 5
        if not x_batched and not any(d == 0 for d in batched.values()):
            return fn(params, x, step)
        return vmap(lambda p, images: fn(p, images, step), in_dims=(batched, 0 if x_batched else None))(params, x)

    def features(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return self._batched(self._features_one, params, x, step)

    def forward(self, params: Params, x: Tensor, step: int | None = None) -> Tensor:
        return self._batched(self._forward_one, params, x, step)
