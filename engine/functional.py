"""The functional core: per-task losses, batched inner adaptation, the batched meta-loss.

This is the only module that differentiates. Everything is batched over tasks: parameters are
either shared (``(in, out)``, the meta-parameters theta) or per-task (``(tasks, in, out)``, the
adapted theta'), and one call handles a whole meta-batch with no Python loop over tasks.

Inner gradients come from one of two interchangeable backends, checked against each other and
against a plain per-task loop in the tests:

* ``closed_form`` (the fast path, default where the activation allows it): the MLP's
  hand-derived backward pass, written with ordinary batched ops (``MLP.loss_and_gradients``).
  Autograd differentiates through it, so second-order meta-gradients are exact, and a meta-step
  costs a few dozen kernel launches instead of hundreds.
* ``torch.func``: ``vmap(grad_and_value(task_loss))`` over tasks, exactly as in the functorch
  MAML examples. Works for any activation; an outer ``.backward()`` flows through ``grad``, which
  makes it second-order too.

First-order variants take the inner gradient as a constant (computed without a graph), so the
meta-gradient is the query gradient at the adapted parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from engine.model import MLP, Params, _derivative_from_output, mse

LearningRates = Mapping[str, float | Tensor]


def _is_batched(model: MLP, name: str, value: Tensor) -> bool:
    return value.dim() > len(model.shapes()[name])


def _func_gradients(model: MLP, params: Params, x: Tensor, y: Tensor, names: Sequence[str]) -> tuple[Tensor, Params]:
    """torch.func backend: vmap over tasks of grad of one task's MSE."""
    adapt = {n: params[n] for n in names}
    frozen = {n: v for n, v in params.items() if n not in adapt}

    def task_loss(adapt: Params, frozen: Params, x: Tensor, y: Tensor) -> Tensor:
        prediction = model.forward({**adapt, **frozen}, x)  # (points, out)
        return ((prediction - y) ** 2).mean()

    adapt_dims = {n: 0 if _is_batched(model, n, v) else None for n, v in adapt.items()}
    frozen_dims = {n: 0 if _is_batched(model, n, v) else None for n, v in frozen.items()}
    grads, loss = vmap(grad_and_value(task_loss), in_dims=(adapt_dims, frozen_dims, 0, 0))(adapt, frozen, x, y)
    return loss, grads


def inner_gradients(
    model: MLP,
    params: Params,
    x: Tensor,
    y: Tensor,
    names: Sequence[str],
    create_graph: bool,
    backend: str = "auto",
) -> tuple[Tensor, Params]:
    """Per-task support loss (tasks,) and gradients w.r.t. ``names``, each (tasks, *shape).

    With ``create_graph`` the gradients stay differentiable w.r.t. ``params`` (second order);
    without it they are constants.
    """
    use_closed_form = backend == "closed_form" or (backend == "auto" and model.has_closed_form_gradient)
    if backend == "closed_form" and not model.has_closed_form_gradient:
        raise ValueError(f"the closed-form backend does not support the {model.activation} activation")
    head_only = set(names) == set(model.head_names)
    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        if use_closed_form:
            loss, grads = model.loss_and_gradients(params, x, y, head_only=head_only)
            grads = {n: grads[n] for n in names}
        else:
            loss, grads = _func_gradients(model, params, x, y, names)
    if not create_graph:
        loss, grads = loss.detach(), {n: g.detach() for n, g in grads.items()}
    return loss, grads


def gradient_norm(grads: Params) -> Tensor:
    """Per-task L2 norm over all gradient tensors: {name: (tasks, ...)} -> (tasks,)."""
    squares = [g.pow(2).flatten(1).sum(1) for g in grads.values()]
    return torch.stack(squares).sum(0).sqrt()


@dataclass
class InnerResult:
    """The outcome of adapting a meta-batch: per-task adapted parameters and per-step numbers."""

    params: Params  # adapted parameters, per task: (tasks, *shape)
    support_losses: list[Tensor] = field(default_factory=list)  # per step, (tasks,), before the step
    grad_norms: list[Tensor] = field(default_factory=list)  # per step, (tasks,)


def inner_adapt(
    model: MLP,
    params: Params,
    x: Tensor,
    y: Tensor,
    learning_rates: LearningRates,
    steps: int,
    names: Sequence[str],
    create_graph: bool,
    record: bool = False,
    backend: str = "auto",
) -> InnerResult:
    """``steps`` SGD steps on the support set of every task at once.

    ``learning_rates`` maps each adapted name to a float or a tensor broadcastable to the
    parameter (Meta-SGD's learned per-parameter rates). ``record`` keeps per-step support losses
    and gradient norms (detached) for metrics and the explorer.
    """
    fast = dict(params)
    result = InnerResult(fast)
    for _ in range(steps):
        loss, grads = inner_gradients(model, fast, x, y, names, create_graph, backend)
        if record:
            result.support_losses.append(loss.detach())
            result.grad_norms.append(gradient_norm({n: g.detach() for n, g in grads.items()}))
        fast = {**fast, **{n: sgd_update(fast[n], grads[n], learning_rates[n]) for n in names}}
    result.params = fast
    return result


def sgd_update(value: Tensor, grad: Tensor, learning_rate: float | Tensor) -> Tensor:
    """value - learning_rate * grad in one differentiable op."""
    if isinstance(learning_rate, Tensor):
        return torch.addcmul(value, learning_rate, grad, value=-1.0)
    return torch.sub(value, grad, alpha=learning_rate)


def mean_task_loss(model: MLP, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Mean over tasks of the per-task MSE; every task has as many points, so it is one MSE."""
    return torch.nn.functional.mse_loss(model.forward(params, x), y)


def task_losses(model: MLP, params: Params, x: Tensor, y: Tensor) -> Tensor:
    """Per-task MSE (tasks,) of shared or per-task ``params`` on (tasks, points, dim) data."""
    return mse(model.forward(params, x), y)


# -- the fast path: adapted weights kept in low-rank form ----------------------------------------
#
# With one scalar inner learning rate, every inner SGD step changes a weight by a rank-K matrix:
# grad_W = a^T delta, where a (tasks, K, in) are the layer's inputs on the K support points and
# delta (tasks, K, out) the loss derivative at its output. After s steps
#     W' = W - lr * A^T D,   b' = b - lr * 1^T D,   A = [a_1; ...; a_s],  D = [delta_1; ...; delta_s]
# so a layer applied to h is  h W + b - lr * (h A^T + 1) D.  Nothing of size (tasks, in, out) is
# ever formed: every op is on (tasks, points, width) or (tasks, points, s K) tensors. This is the
# same function of theta as the dense path (the tests check it), just fewer and smaller kernels.


def _shared_layer(h: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    tasks, points, width = h.shape
    return torch.addmm(bias, h.reshape(tasks * points, width), weight).view(tasks, points, -1)


def _lowrank_forward(model: MLP, params: Params, corrections: dict, lr: float, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    inputs, h, last = [], x, model.num_layers - 1
    for i in range(model.num_layers):
        inputs.append(h)
        z = _shared_layer(h, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
        if i in corrections:
            a, d = corrections[i]
            kernel = torch.bmm(h, a.transpose(1, 2)).add_(1.0)  # h A^T + 1: (tasks, points, rank)
            z = torch.baddbmm(z, kernel, d, alpha=-lr)
        h = model._act(z) if i < last else z
    return h, inputs


def _lowrank_backward(model: MLP, params: Params, corrections: dict, lr: float, inputs: list[Tensor], delta: Tensor, layers: set[int]) -> dict:
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
            a, d = corrections[i]
            back = torch.baddbmm(back, torch.bmm(delta, d.transpose(1, 2)), a, alpha=-lr)
        if model.activation == "relu":
            delta = torch.ops.aten.threshold_backward(back, inputs[i].detach(), 0)
        else:
            delta = back * _derivative_from_output(model.activation, inputs[i])
    return out


def lowrank_query_loss(
    model: MLP,
    params: Params,
    x_support: Tensor,
    y_support: Tensor,
    x_query: Tensor,
    y_query: Tensor,
    lr: float,
    steps: int,
    names: Sequence[str],
    create_graph: bool,
    record: bool = False,
) -> tuple[Tensor, InnerResult]:
    """Mean query MSE after ``steps`` inner steps (tasks batched), via low-rank adapted weights.

    Same value and gradient as ``inner_adapt`` + ``mean_task_loss``; needs a scalar learning rate
    and the closed-form backward (relu, tanh, sigmoid). ``InnerResult.params`` stays empty.
    """
    layers = sorted({int(n[5:].split(".")[0]) for n in names})
    corrections: dict[int, tuple[Tensor, Tensor]] = {}
    result = InnerResult({})
    for _ in range(steps):
        with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            prediction, inputs = _lowrank_forward(model, params, corrections, lr, x_support)
            residual = prediction - y_support
            count = residual.shape[-2] * residual.shape[-1]
            delta = residual * (2.0 / count)
            factors = _lowrank_backward(model, params, corrections, lr, inputs, delta, set(layers))
        if not create_graph:
            factors = {i: (a.detach(), d.detach()) for i, (a, d) in factors.items()}
        if record:
            with torch.no_grad():
                result.support_losses.append(residual.detach().square().mean(dim=(-2, -1)))
                grads = {}
                for i, (a, d) in factors.items():
                    grads[f"w{i}"] = torch.bmm(a.transpose(1, 2), d)
                    grads[f"b{i}"] = d.sum(1)
                result.grad_norms.append(gradient_norm(grads))
        for i, (a, d) in factors.items():
            if i in corrections:
                old_a, old_d = corrections[i]
                corrections[i] = (torch.cat([old_a, a], 1), torch.cat([old_d, d], 1))
            else:
                corrections[i] = (a, d)
    prediction, _ = _lowrank_forward(model, params, corrections, lr, x_query)
    return torch.nn.functional.mse_loss(prediction, y_query), result


# -- the fastest path: one inner step, relu, with a hand-written outer backward -----------------
#
# The low-rank meta-loss above is an ordinary (first-order) differentiable function of theta,
# because the inner gradient in it is written out by hand. Its outer backward can therefore be
# written out by hand too: that removes the autograd engine's per-node cost, which is most of
# the time at this size (measured: 0.3 ms of a 0.9 ms meta-step is autograd bookkeeping alone).
# The case covered is the default protocol's: one inner step, relu, one scalar inner rate,
# every layer adapted (maml, fomaml). Tests check it against the autograd paths and the plain
# loop; everything else uses the paths above.


class _OneStepReluMetaLoss(torch.autograd.Function):
    """Mean query MSE after one inner SGD step, for a relu MLP; params = (W0, b0, W1, b1, ...)."""

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
        # query pass through the adapted weights W - lr A^T D, b - lr 1^T D
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
            return (None, None, None, None, None, None, *[t for pair in zip(grad_w, grad_b) for t in pair])

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
        return (None, None, None, None, None, None, *[t for pair in zip(grad_w, grad_b) for t in pair])


def one_step_relu_query_loss(model: MLP, params: Params, x_support: Tensor, y_support: Tensor, x_query: Tensor,
                             y_query: Tensor, lr: float, first_order: bool) -> Tensor:
    """Mean query MSE after one inner step of every layer, with a hand-written outer backward."""
    if model.activation != "relu":
        raise ValueError("the fused one-step path is written for relu networks")
    ordered = [params[name] for name in model.names]
    return _OneStepReluMetaLoss.apply(float(lr), bool(first_order), x_support, y_support, x_query, y_query, *ordered)
