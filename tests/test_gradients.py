"""The meta-gradients against independent references: a plain per-task loop with
``create_graph=True``, central finite differences in float64, and closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import engine
from engine.algorithms.base import AdaptHistory
from tests.conftest import make_problem

BACKENDS = ("lowrank", "closed_form", "torch.func")
ONE_STEP_RELU_BACKENDS = ("fused", "auto")  # the hand-written outer backward (auto picks it here)


def loop_meta_loss(model, params, batch, inner_lr, steps, first_order=False, names=None, rates=None):
    """The tutorial implementation: one task at a time, autograd.grad per inner step."""
    names = list(model.names) if names is None else names
    total = 0.0
    for t in range(batch.num_tasks):
        fast = dict(params)
        for _ in range(steps):
            loss = nnf.mse_loss(model.forward(fast, batch.x_support[t]), batch.y_support[t])
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=not first_order)
            for n, g in zip(names, grads):
                lr = inner_lr if rates is None else rates[n]
                fast[n] = fast[n] - lr * (g if not first_order else g.detach())
        total = total + nnf.mse_loss(model.forward(fast, batch.x_query[t]), batch.y_query[t])
    return total / batch.num_tasks


def leaves(params):
    return {n: v.detach().clone().requires_grad_() for n, v in params.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_maml_matches_plain_loop_with_create_graph(backend, steps, activation):
    model, params, batch = make_problem(activation=activation)
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.05, inner_steps=steps, backend=backend)
    loss, grads = algorithm.meta_gradient(params, batch)

    reference_params = leaves(params)
    reference = loop_meta_loss(model, reference_params, batch, 0.05, steps)
    reference_grads = torch.autograd.grad(reference, list(reference_params.values()))
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
    for name, expected in zip(reference_params, reference_grads):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_is_exact_second_order_against_finite_differences(backend, steps):
    """Directional derivatives of the meta-loss by central differences in float64. A first-order
    meta-gradient misses the Hessian term and fails this by orders of magnitude more than the
    tolerance (checked below on FOMAML)."""
    model, params, batch = make_problem(activation="tanh", hidden=(6, 6))
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.1, inner_steps=steps, backend=backend)
    first_order = engine.make_algorithm("fomaml", model, inner_lr=0.1, inner_steps=steps)
    for numeric, analytic, first in directional_derivatives(algorithm, params, batch, first_order):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))
        assert abs(first - numeric) > 1e3 * abs(analytic - numeric)


def directional_derivatives(algorithm, params, batch, other=None, seed=1, eps=1e-6):
    """(central difference, meta-gradient . v, other's meta-gradient . v) along 3 random v."""
    _, grads = algorithm.meta_gradient(params, batch)
    other_grads = other.meta_gradient(params, batch)[1] if other is not None else grads
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        direction = {n: torch.randn(v.shape, generator=generator, dtype=v.dtype) for n, v in params.items()}
        plus = {n: params[n] + eps * direction[n] for n in params}
        minus = {n: params[n] - eps * direction[n] for n in params}
        numeric = (algorithm.meta_gradient(plus, batch)[0] - algorithm.meta_gradient(minus, batch)[0]) / (2 * eps)
        dot = lambda g: float(sum((g[n] * direction[n]).sum() for n in params))  # noqa: E731
        yield float(numeric), dot(grads), dot(other_grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [1, 2])
def test_fomaml_is_the_query_gradient_at_the_adapted_parameters(backend, steps):
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm("fomaml", model, inner_lr=0.05, inner_steps=steps, backend=backend)
    _, grads = algorithm.meta_gradient(params, batch)
    history = algorithm.adapt(params, batch.x_support, batch.y_support, steps)
    adapted = {n: v.detach().clone().requires_grad_() for n, v in history.params[-1].items()}  # (tasks, ...)
    per_task = nnf.mse_loss(model.forward(adapted, batch.x_query), batch.y_query, reduction="none").mean(dim=(1, 2))
    query_grads = torch.autograd.grad(per_task.mean(), list(adapted.values()))
    for name, g in zip(adapted, query_grads):
        torch.testing.assert_close(grads[name], g.sum(0), rtol=1e-9, atol=1e-12)
    assert grads["layer1.weight"].abs().sum() > 0


def test_fomaml_matches_plain_loop_with_detached_inner_gradients():
    model, params, batch = make_problem()
    _, grads = engine.make_algorithm("fomaml", model, inner_lr=0.05, inner_steps=2).meta_gradient(params, batch)
    reference_params = leaves(params)
    reference = loop_meta_loss(model, reference_params, batch, 0.05, 2, first_order=True)
    for name, expected in zip(reference_params, torch.autograd.grad(reference, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_anil_adapts_only_the_head_and_matches_the_loop(backend):
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm("anil", model, inner_lr=0.05, inner_steps=2, backend=backend)
    history = algorithm.adapt(params, batch.x_support, batch.y_support, 2)
    for name in model.names:
        unchanged = torch.equal(history.params[-1][name][0], params[name])
        assert unchanged == (name not in model.head_names), name
    _, grads = algorithm.meta_gradient(params, batch)
    reference_params = leaves(params)
    reference = loop_meta_loss(model, reference_params, batch, 0.05, 2, names=model.head_names)
    for name, expected in zip(reference_params, torch.autograd.grad(reference, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-12)
    assert grads["layer0.weight"].abs().sum() > 0  # the body is still meta-learned


@pytest.mark.parametrize("backend", BACKENDS)
def test_metasgd_learning_rates_receive_exact_gradients(backend):
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm("metasgd", model, inner_lr=0.05, inner_steps=2, backend=backend)
    meta = algorithm.init(torch.Generator().manual_seed(3), device="cpu")
    meta = {n: v.double() for n, v in meta.items()}
    meta.update({n: params[n] for n in model.names})
    generator = torch.Generator().manual_seed(4)
    for n in model.names:  # distinct per-entry rates so a wrong broadcast would show
        meta[f"lr.{n}"] = 0.02 + 0.06 * torch.rand(params[n].shape, generator=generator, dtype=torch.float64)
    _, grads = algorithm.meta_gradient(meta, batch)
    reference_params = leaves(meta)
    rates = {n: reference_params[f"lr.{n}"] for n in model.names}
    reference = loop_meta_loss(model, {n: reference_params[n] for n in model.names}, batch, None, 2, rates=rates)
    expected = dict(zip(reference_params, torch.autograd.grad(reference, list(reference_params.values()))))
    for name in meta:
        torch.testing.assert_close(grads[name], expected[name], rtol=1e-9, atol=1e-12)
    assert all(grads[f"lr.{n}"].abs().sum() > 0 for n in model.names)


def test_reptile_matches_its_closed_form_on_a_linear_model():
    """For y = x w + b the support loss is quadratic, so k SGD steps are (I - a H)^k in closed form."""
    model, params, batch = make_problem(hidden=())
    inner_lr, steps = 0.03, 4
    _, grads = engine.make_algorithm("reptile", model, inner_lr=inner_lr, inner_steps=steps).meta_gradient(params, batch)
    theta = torch.cat([params["layer0.weight"].reshape(1), params["layer0.bias"].reshape(1)])  # (2,)
    adapted = []
    for t in range(batch.num_tasks):
        features = torch.cat([batch.x_support[t], torch.ones_like(batch.x_support[t])], dim=1)  # (shots, 2)
        hessian = 2 * features.T @ features / features.shape[0]
        linear = 2 * features.T @ batch.y_support[t, :, 0] / features.shape[0]
        contraction = torch.eye(2, dtype=torch.float64) - inner_lr * hessian
        phi = torch.linalg.matrix_power(contraction, steps) @ theta
        phi = phi + sum(torch.linalg.matrix_power(contraction, j) @ (inner_lr * linear) for j in range(steps))
        adapted.append(phi)
    expected = (theta - torch.stack(adapted).mean(0)) / inner_lr
    torch.testing.assert_close(grads["layer0.weight"].reshape(1), expected[:1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads["layer0.bias"].reshape(1), expected[1:], rtol=1e-10, atol=1e-12)


def test_reptile_with_one_step_is_the_mean_support_gradient():
    model, params, batch = make_problem()
    _, grads = engine.make_algorithm("reptile", model, inner_lr=0.05, inner_steps=1).meta_gradient(params, batch)
    reference_params = leaves(params)
    loss = sum(nnf.mse_loss(model.forward(reference_params, batch.x_support[t]), batch.y_support[t])
               for t in range(batch.num_tasks)) / batch.num_tasks
    for name, expected in zip(reference_params, torch.autograd.grad(loss, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-12)


def test_pretrain_is_the_plain_gradient_on_all_points():
    model, params, batch = make_problem()
    _, grads = engine.make_algorithm("pretrain", model).meta_gradient(params, batch)
    reference_params = leaves(params)
    x = torch.cat([batch.x_support, batch.x_query], 1)
    y = torch.cat([batch.y_support, batch.y_query], 1)
    loss = nnf.mse_loss(model.forward(reference_params, x), y)
    for name, expected in zip(reference_params, torch.autograd.grad(loss, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-10, atol=1e-12)


def test_gelu_falls_back_to_torch_func_and_stays_exact():
    model, params, batch = make_problem(activation="gelu")
    assert not model.has_closed_form_gradient
    loss, grads = engine.make_algorithm("maml", model, inner_lr=0.05, inner_steps=2).meta_gradient(params, batch)
    reference_params = leaves(params)
    reference = loop_meta_loss(model, reference_params, batch, 0.05, 2)
    for name, expected in zip(reference_params, torch.autograd.grad(reference, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("algo", ["maml", "anil", "metasgd", "pretrain"])
def test_batched_adaptation_equals_one_task_at_a_time(algo):
    """vmapped/batched adaptation over tasks vs adapting each task alone."""
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm(algo, model, inner_lr=0.05)
    meta = {**{n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}, **params}
    together: AdaptHistory = algorithm.adapt(meta, batch.x_support, batch.y_support, 3, batch.x_query, batch.y_query)
    for t in range(batch.num_tasks):
        alone = algorithm.adapt(meta, batch.x_support[t], batch.y_support[t], 3, batch.x_query[t], batch.y_query[t])
        for step in range(4):
            torch.testing.assert_close(together.support_loss[step][t], alone.support_loss[step][0])
            torch.testing.assert_close(together.query_loss[step][t], alone.query_loss[step][0])
            torch.testing.assert_close(together.grad_norm[step][t], alone.grad_norm[step][0])
            for name in model.names:
                torch.testing.assert_close(together.params[step][name][t], alone.params[step][name][0])


def test_adapt_history_lowers_the_support_loss_and_records_every_step():
    model, params, batch = make_problem()
    history = engine.make_algorithm("maml", model, inner_lr=0.02).adapt(params, batch.x_support[0], batch.y_support[0], 5,
                                                                         batch.x_query[0], batch.y_query[0])
    assert history.steps == 5 and len(history.support_loss) == len(history.query_loss) == len(history.grad_norm) == 6
    losses = [float(v) for v in history.support_loss]
    assert losses[-1] < losses[0]
    torch.testing.assert_close(history.params[0]["layer0.weight"][0], params["layer0.weight"])
    theta = leaves(params)
    support = nnf.mse_loss(model.forward(theta, batch.x_support[0]), batch.y_support[0])
    grads = dict(zip(theta, torch.autograd.grad(support, list(theta.values()))))
    for name in model.names:
        torch.testing.assert_close(history.params[1][name][0], params[name] - 0.02 * grads[name])
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    torch.testing.assert_close(history.grad_norm[0][0], norm)


@pytest.mark.parametrize("backend", ONE_STEP_RELU_BACKENDS)
@pytest.mark.parametrize("algo", ["maml", "fomaml"])
@pytest.mark.parametrize("hidden", [(8, 8), (5, 7, 6)])
def test_fused_one_step_path_matches_the_plain_loop(backend, algo, hidden):
    model, params, batch = make_problem(hidden=hidden)
    algorithm = engine.make_algorithm(algo, model, inner_lr=0.05, inner_steps=1, backend=backend)
    assert algorithm._use_fused(algorithm.learning_rates(params))
    loss, grads = algorithm.meta_gradient(params, batch)
    reference_params = leaves(params)
    reference = loop_meta_loss(model, reference_params, batch, 0.05, 1, first_order=algo == "fomaml")
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
    for name, expected in zip(reference_params, torch.autograd.grad(reference, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-11)


def test_fused_one_step_path_against_finite_differences():
    model, params, batch = make_problem(hidden=(6, 6))
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.1, inner_steps=1, backend="fused")
    for numeric, analytic, _ in directional_derivatives(algorithm, params, batch, seed=2):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))


def test_fused_backend_refuses_what_it_does_not_cover():
    model = engine.MLP(hidden=(4,))
    with pytest.raises(ValueError, match="fused backend"):
        engine.make_algorithm("maml", model, inner_steps=2, backend="fused")
    with pytest.raises(ValueError, match="fused backend"):
        engine.make_algorithm("anil", model, backend="fused")
    with pytest.raises(ValueError, match="fused backend"):
        engine.make_algorithm("maml", engine.MLP(hidden=(4,), activation="tanh"), backend="fused")
