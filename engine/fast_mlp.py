"""Hand-derived kernels for the one case that dominates: an MLP, mean squared error, SGD steps.

Three fast paths live here, each behind :func:`refuses`, which says why it cannot run a request
(``engine.backends`` asks before using one; the general ``torch.func`` path takes the rest):

* :func:`mse_gradients`: the MLP's backward pass of the per-task MSE written with ordinary
  batched ops, for activations whose derivative is a function of their output (relu, tanh,
  sigmoid). Autograd differentiates *through* it, so second-order meta-gradients stay exact with a
  fraction of the kernels of a ``create_graph`` backward. Any inner rates.
* :func:`lowrank_meta_loss`: with one number per parameter tensor as inner rate, every inner step
  changes a weight by a rank-K matrix, ``grad_W = a^T delta`` (a: the layer's inputs on the K
  support points, delta: the loss derivative at its output). After s steps
  ``W' = W - sum_s lw_s a_s^T d_s`` and ``b' = b - sum_s lb_s 1^T d_s``, so a layer applied to h is
  ``h W + b - sum_s (lw_s h a_s^T + lb_s) d_s``: nothing of size (tasks, in, out) is formed.
* :func:`fused_meta_loss`: one inner step of every layer of a relu MLP at one fixed rate (the
  low-rank form with one step), with forward and outer backward written out inline by hand. That
  removes the autograd engine's per-node cost, most of the time at this size (0.3 ms of a 0.9 ms
  meta-step was autograd bookkeeping alone), and every Python call on the way.

The tests check every path against the plain per-task loop and finite differences in float64.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from engine.functional import InnerLoop, InnerResult, Proximal, Rate, gradient_norm
from engine.losses import Loss, MeanSquaredError
from engine.model import MLP, Model, Params

ACTIVATIONS = ("relu", "tanh", "sigmoid")  # derivative expressible from the activation's output


def refuses(model: Model, loss: Loss, loop: InnerLoop, proximal: bool = False) -> str | None:
    """Why the hand-derived MLP kernels cannot run ``loop`` (None when they can); with ``proximal``
    an iMAML proximal term is accepted (:func:`mse_gradients` adds its gradient)."""
    if type(model) is not MLP:  # a subclass may change what forward computes (per-step state, say)
        return f"they are written for the plain MLP, not {type(model).__name__}"
    if model.activation not in ACTIVATIONS:
        return f"the {model.activation} activation has no hand-derived backward (relu, tanh and sigmoid do)"
    if type(loss) is not MeanSquaredError:  # a subclass may compute something else under the same name
        return f"they implement the mse loss, not {loss.name if type(loss).name != 'mse' else type(loss).__name__}"
    if loop.regulariser is not None and not (proximal and isinstance(loop.regulariser, Proximal)):
        return "the inner loss has an extra term" + ("" if proximal else " (only the closed-form gradients add a proximal one)")
    return None


def _layer_of(name: str) -> int:
    return int(name[5:].split(".")[0])  # "layer3.weight" -> 3



def _activation_backward(model: MLP, back: Tensor, output: Tensor) -> Tensor:
    """d loss / d (pre-activation) from d loss / d (activation output), given that output."""
    if model.activation == "relu":  # relu's own backward kernel: one op, and (correctly) no second derivative
        return torch.ops.aten.threshold_backward(back, output.detach(), 0)
    if model.activation == "tanh":
        return back * (1 - output * output)
    return back * (output * (1 - output))  # sigmoid


@functools.lru_cache(maxsize=256)
def _plan(names: tuple[str, ...]) -> tuple[int, frozenset[str]]:
    """The lowest adapted layer and the set of adapted names (worked out once per set of names)."""
    return min(_layer_of(n) for n in names), frozenset(names)


def mse_gradients(model: MLP, loss: Loss, params: Params, x: Tensor, y: Tensor, loop: InnerLoop, step: int,
                  create_graph: bool) -> tuple[Tensor, Params]:
    """Per-task MSE (tasks,) and its gradient w.r.t. the adapted parameters, each (tasks, *shape).

    Parameters may be shared or per task; x and y are (tasks, points, dim). Only the layers down to
    the lowest adapted one are gone through (ANIL's head-only steps stop at the head). Written
    inline: it runs once per inner step, and Python calls cost as much as kernels at this size.
    """
    lowest, names = _plan(loop.names)
    relu = model.activation == "relu"
    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        output, inputs = model.forward_recording(params, x)
        residual = output - y  # (tasks, points, out)
        support = residual.square().mean(dim=(-2, -1))
        delta = residual * (2.0 / (residual.shape[-2] * residual.shape[-1]))  # d loss / d output
        grads: Params = {}
        for i in range(model.num_layers - 1, lowest - 1, -1):
            weight_name, bias_name = model.names[2 * i], model.names[2 * i + 1]
            if weight_name in names:
                grads[weight_name] = torch.bmm(inputs[i].transpose(-2, -1), delta)
            if bias_name in names:
                grads[bias_name] = delta.sum(dim=-2)
            if i > lowest:
                weight = params[weight_name]
                back = torch.bmm(delta, weight.transpose(-2, -1)) if weight.dim() == 3 else delta @ weight.t()
                if relu:  # relu's own backward kernel: one op, and (correctly) no second derivative
                    delta = torch.ops.aten.threshold_backward(back, inputs[i].detach(), 0)
                else:
                    delta = _activation_backward(model, back, inputs[i])
        proximal = loop.regulariser
        if isinstance(proximal, Proximal):  # + lam * (phi - theta), the gradient of lam/2 ||phi - theta||^2
            anchor = loop.anchor or {}
            for n in proximal.names:
                if n in grads:
                    grads[n] = grads[n] + proximal.lam * (params[n] - anchor[n])
    if not create_graph:
        support, grads = support.detach(), {n: g.detach() for n, g in grads.items()}
    return support, grads


def mse_hvp(model: MLP, params: Params, x: Tensor, y: Tensor, vectors: Params) -> Params:
    """Per-task Hessian-vector products of the MSE w.r.t. the parameters named in ``vectors``: double
    backward through :func:`mse_gradients` (its gradient is exact, so its derivative is the Hessian's
    product; relu's second derivative is zero, as in autograd's own)."""
    names = tuple(vectors)
    tasks = x.shape[0]
    loop = InnerLoop(names=names, rates=(), second_order=True)
    with torch.enable_grad():
        leaves = {n: model.per_task(n, params[n].detach(), tasks).clone().requires_grad_() for n in names}
        merged = {**{n: v.detach() for n, v in params.items()}, **leaves}
        _, grads = mse_gradients(model, MeanSquaredError(), merged, x, y, loop, 0, True)
        inner = sum((grads[n] * vectors[n].detach()).sum() for n in names)
        products = torch.autograd.grad(inner, [leaves[n] for n in names])
    return {n: p.detach() for n, p in zip(names, products)}


# -- low-rank adapted weights ---------------------------------------------------------------------
class _Correction:
    """An adapted layer's change, ``-A^T diag(cw) D`` on the weight and ``-cb^T D`` on the bias.

    A (tasks, R, in) and D (tasks, R, out) stack every step's support inputs and output deltas
    (R = steps x shots). With one shared float rate for weight and bias at every step the
    scaling is a single ``alpha`` (the common case, one op cheaper); otherwise ``cw`` and ``cb``
    hold each row's rate (learned rates stay differentiable through them).
    """

    def __init__(self) -> None:
        self.a: Tensor | None = None
        self.d: Tensor | None = None
        self.uniform: float | None = None  # the one rate, while there is one
        self.cw: Tensor | None = None
        self.cb: Tensor | None = None

    def extend(self, a: Tensor, d: Tensor, weight_rate: Rate, bias_rate: Rate) -> None:
        rows = a.shape[1]
        same = isinstance(weight_rate, float) and isinstance(bias_rate, float) and weight_rate == bias_rate
        uniform = same and (self.a is None or self.uniform == weight_rate)
        if not uniform and self.cw is None:  # leave the one-rate form: spell out every row's rate
            old = 0 if self.a is None else self.a.shape[1]
            fill = lambda: torch.full((old,), self.uniform or 0.0, dtype=a.dtype, device=a.device)  # noqa: E731
            self.cw, self.cb = fill(), fill()
        if not uniform:
            expand = lambda r: (r.to(a.dtype).expand(rows) if isinstance(r, Tensor)  # noqa: E731
                                else torch.full((rows,), float(r), dtype=a.dtype, device=a.device))
            self.cw = torch.cat([self.cw, expand(weight_rate)])
            self.cb = torch.cat([self.cb, expand(bias_rate)])
        self.uniform = weight_rate if uniform else None
        self.a = a if self.a is None else torch.cat([self.a, a], 1)
        self.d = d if self.d is None else torch.cat([self.d, d], 1)

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        """``z`` corrected for inputs ``h`` (tasks, points, in)."""
        kernel = torch.bmm(h, self.a.transpose(1, 2))  # (tasks, points, R)
        if self.uniform is not None:
            return torch.baddbmm(z, kernel.add_(1.0), self.d, alpha=-self.uniform)
        return torch.baddbmm(z, kernel * self.cw + self.cb, self.d, alpha=-1.0)

    def backward(self, delta: Tensor, back: Tensor) -> Tensor:
        """``back`` (d loss / d input through the shared weight) corrected for the adapted weight."""
        kernel = torch.bmm(delta, self.d.transpose(1, 2))  # (tasks, points, R)
        if self.uniform is not None:
            return torch.baddbmm(back, kernel, self.a, alpha=-self.uniform)
        return torch.baddbmm(back, kernel * self.cw, self.a, alpha=-1.0)


def _shared_layer(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    tasks, points, width = h.shape
    return torch.addmm(bias, h.reshape(tasks * points, width), weight).view(tasks, points, -1)


def lowrank_forward(model: MLP, params: Params, corrections: dict[int, _Correction], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The adapted network's output on x (tasks, points, in) and every layer's input."""
    inputs, h, last = [], x, model.num_layers - 1
    for i in range(model.num_layers):
        inputs.append(h)
        z = _shared_layer(h, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
        if i in corrections:
            z = corrections[i].forward(h, z)
        h = model.act(z) if i < last else z
    return h, inputs


def _lowrank_factors(model: MLP, params: Params, corrections: dict[int, _Correction], inputs: list[Tensor],
                     delta: Tensor, layers: set[int]) -> dict[int, tuple[Tensor, Tensor]]:
    """Per adapted layer i: (its input a_i, its output delta_i) on the support points."""
    out, first = {}, min(layers)
    for i in range(model.num_layers - 1, first - 1, -1):
        if i in layers:
            out[i] = (inputs[i], delta)
        if i == first:
            break
        tasks, points, width = delta.shape
        back = (delta.reshape(tasks * points, width) @ params[f"layer{i}.weight"].t()).view(tasks, points, -1)
        if i in corrections:
            back = corrections[i].backward(delta, back)
        delta = _activation_backward(model, back, inputs[i])
    return out


def lowrank_meta_loss(model: MLP, loss: Loss, params: Params, batch, loop: InnerLoop,
                      record: bool = False) -> tuple[Tensor, Tensor, InnerResult]:
    """Outer loss after the inner loop via low-rank adapted weights (same value and gradient as the
    dense path; needs one number per parameter tensor as rate)."""
    names = set(loop.names)
    layers = {_layer_of(n) for n in names}
    corrections: dict[int, _Correction] = {}
    result, weights = InnerResult(), loop.weights()
    objective = final = None
    for s in range(loop.steps):
        with torch.set_grad_enabled(loop.second_order and torch.is_grad_enabled()):
            prediction, inputs = lowrank_forward(model, params, corrections, batch.x_support)
            residual = prediction - batch.y_support
            delta = residual * (2.0 / (residual.shape[-2] * residual.shape[-1]))
            factors = _lowrank_factors(model, params, corrections, inputs, delta, layers)
        if not loop.second_order:
            factors = {i: (a.detach(), d.detach()) for i, (a, d) in factors.items()}
        if record:
            with torch.no_grad():
                result.support_losses.append(residual.detach().square().mean(dim=(-2, -1)))
                grads = {}
                for i, (a, d) in factors.items():
                    if f"layer{i}.weight" in names:
                        grads[f"w{i}"] = torch.bmm(a.transpose(1, 2), d)
                    if f"layer{i}.bias" in names:
                        grads[f"b{i}"] = d.sum(1)
                result.grad_norms.append(gradient_norm(grads))
        rates = loop.rates[s]
        for i, (a, d) in factors.items():
            corrections.setdefault(i, _Correction()).extend(
                a, d, rates.get(f"layer{i}.weight", 0.0), rates.get(f"layer{i}.bias", 0.0))
        if weights[s] or s == loop.steps - 1:
            query, _ = lowrank_forward(model, params, corrections, batch.x_query)
            final = loss.per_task(query, batch.y_query).mean()
            if weights[s]:
                objective = weights[s] * final if objective is None else objective + weights[s] * final
    return objective, final, result


# -- one step, relu, a hand-written outer backward ------------------------------------------------
def fused_refuses(model: Model, loss: Loss, loop: InnerLoop) -> str | None:
    """The fused path covers the default protocol's meta-step and nothing else."""
    reason = refuses(model, loss, loop)
    if reason:
        return reason
    if model.activation != "relu":
        return "it is written for relu"
    if loop.steps != 1:
        return f"it takes exactly one inner step, not {loop.steps}"
    if set(loop.names) != set(model.names):
        return "it adapts every parameter"
    if loop.weights() != (1.0,):
        return "its outer loss is the query loss after the step, weighted 1"
    rates = list(loop.rates[0].values())
    if not all(isinstance(r, float) for r in rates) or len(set(rates)) != 1:
        return "it needs one fixed inner rate for every parameter (not learned or per-layer rates)"
    return None


class _OneStepReluMetaLoss(torch.autograd.Function):
    """Mean query MSE after one inner SGD step, for a relu MLP; params = (W0, b0, W1, b1, ...).

    Forward and backward are written out inline, loops and all: at this size a meta-step is a few
    dozen microsecond kernels, and every Python call on the way costs as much as one of them.
    """

    @staticmethod
    def forward(ctx, lr: float, first_order: bool, x_support, y_support, x_query, y_query, *params):
        weights, biases = params[0::2], params[1::2]
        layers = len(weights)
        x_support, x_query = x_support.contiguous(), x_query.contiguous()  # reshaped several times below
        tasks, shots, _ = x_support.shape
        points = x_query.shape[1]
        # support pass at theta, then its hand-written backward: delta[i] is dL/dz_i per task
        support_inputs, h = [x_support], x_support
        for i in range(layers):
            z = torch.addmm(biases[i], h.reshape(tasks * shots, -1), weights[i]).view(tasks, shots, -1)
            if i < layers - 1:
                h = torch.relu(z)
                support_inputs.append(h)
        deltas = [None] * layers
        delta = (z - y_support) * (2.0 / (shots * z.shape[-1]))
        deltas[-1] = delta
        for i in range(layers - 1, 0, -1):
            back = (delta.reshape(tasks * shots, -1) @ weights[i].t()).view(tasks, shots, -1)
            delta = torch.ops.aten.threshold_backward(back, support_inputs[i], 0)
            deltas[i - 1] = delta
        # query pass through the adapted weights W - lr A^T D, b - lr 1^T D (the low-rank form)
        query_inputs, kernels, h = [x_query], [], x_query
        for i in range(layers):
            kernel = torch.bmm(h, support_inputs[i].transpose(1, 2)).add_(1.0)  # (tasks, points, shots)
            z = torch.addmm(biases[i], h.reshape(tasks * points, -1), weights[i]).view(tasks, points, -1)
            z = torch.baddbmm(z, kernel, deltas[i], alpha=-lr)
            kernels.append(kernel)
            if i < layers - 1:
                h = torch.relu(z)
                query_inputs.append(h)
        residual = z - y_query
        ctx.lr, ctx.first_order = lr, first_order
        ctx.saved = (weights, support_inputs, deltas, query_inputs, kernels, residual)
        return residual.square().mean()

    @staticmethod
    def backward(ctx, grad_loss):
        weights, support_inputs, deltas, query_inputs, kernels, residual = ctx.saved
        lr, first_order = ctx.lr, ctx.first_order
        layers = len(weights)
        tasks, shots, _ = support_inputs[0].shape
        points = query_inputs[0].shape[1]
        flat = lambda t, rows: t.reshape(rows, -1)  # noqa: E731
        grad_w, grad_b = [None] * layers, [None] * layers
        grad_deltas, grad_support = [None] * layers, [None] * layers
        none = (None,) * 6  # lr, first_order and the four data tensors

        # reverse of the query pass
        g = residual * (grad_loss * 2.0 / residual.numel())  # dL/dz of the output layer
        for i in range(layers - 1, -1, -1):
            g_flat = flat(g, tasks * points)
            grad_w[i] = flat(query_inputs[i], tasks * points).t() @ g_flat
            grad_b[i] = g_flat.sum(0)
            if i > 0 or not first_order:
                grad_kernel = torch.bmm(g, deltas[i].transpose(1, 2)).mul_(-lr)  # (tasks, points, shots)
            if not first_order:
                grad_deltas[i] = torch.bmm(kernels[i].transpose(1, 2), g).mul_(-lr)  # (tasks, shots, out)
                if i > 0:
                    grad_support[i] = torch.bmm(grad_kernel.transpose(1, 2), query_inputs[i])
            if i > 0:
                grad_input = (g_flat @ weights[i].t()).view(tasks, points, -1)
                grad_input = torch.baddbmm(grad_input, grad_kernel, support_inputs[i])
                g = torch.ops.aten.threshold_backward(grad_input, query_inputs[i], 0)
        if first_order:
            return (*none, *[t for pair in zip(grad_w, grad_b) for t in pair])

        # reverse of the hand-written support backward: delta[i-1] = relu'(s_i) * (delta[i] W_i^T)
        for i in range(1, layers):
            grad_back = flat(torch.ops.aten.threshold_backward(grad_deltas[i - 1], support_inputs[i], 0), tasks * shots)
            grad_deltas[i] = grad_deltas[i] + (grad_back @ weights[i]).view(tasks, shots, -1)
            grad_w[i] = grad_w[i] + grad_back.t() @ flat(deltas[i], tasks * shots)
        # delta[-1] = (2 / n) (support output - y): back into the support forward pass
        g = grad_deltas[-1] * (2.0 / (shots * residual.shape[-1]))
        for i in range(layers - 1, -1, -1):
            g_flat = flat(g, tasks * shots)
            grad_w[i] = grad_w[i] + flat(support_inputs[i], tasks * shots).t() @ g_flat
            grad_b[i] = grad_b[i] + g_flat.sum(0)
            if i > 0:
                grad_input = (g_flat @ weights[i].t()).view(tasks, shots, -1) + grad_support[i]
                g = torch.ops.aten.threshold_backward(grad_input, support_inputs[i], 0)
        return (*none, *[t for pair in zip(grad_w, grad_b) for t in pair])


def fused_meta_loss(model: MLP, loss: Loss, params: Params, batch, loop: InnerLoop,
                    record: bool = False) -> tuple[Tensor, Tensor, InnerResult]:
    """Mean query MSE after one inner step of every layer, with a hand-written outer backward."""
    rate = next(iter(loop.rates[0].values()))
    objective = _OneStepReluMetaLoss.apply(rate, not loop.second_order, batch.x_support, batch.y_support,
                                           batch.x_query, batch.y_query, *[params[name] for name in model.names])
    if not record:
        return objective, objective, None
    with torch.no_grad():  # numbers only, from the low-rank path: logging must never change the gradient
        _, _, result = lowrank_meta_loss(model, loss, {n: v.detach() for n, v in params.items()}, batch, loop, record=True)
    return objective, objective, result
