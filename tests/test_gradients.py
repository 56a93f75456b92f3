"""The meta-gradients against independent references: a plain per-task loop with
``create_graph=True`` (every registered algorithm through every backend that accepts it), central
finite differences in float64, and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf

import engine
from engine import backends
from engine.algorithms.base import Algorithm
from tests.conftest import assert_matches_loop, leaves, make_problem

BACKENDS = tuple(backends.BACKENDS)
# the algorithms whose meta-step is the shared core's (the others form their own; tested below)
CORE_ALGORITHMS = sorted(n for n, cls in engine.ALGORITHMS.items() if cls.meta_step is Algorithm.meta_step)


def randomise_learned(algorithm, params, seed=3):
    """Distinct learned rates (per entry, per layer, per step) so a wrong broadcast would show."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(params)
    for name, value in params.items():
        if name.startswith(("lr.", "lslr.")) or name == "alpha":
            out[name] = 0.02 + 0.06 * torch.rand(value.shape, generator=generator, dtype=torch.float64)
    return out


def core_problem(name, backend, steps, activation="relu", hidden=(8, 8)):
    model, _, batch = make_problem(activation=activation, hidden=hidden)
    algorithm = engine.make_algorithm(name, model, inner_lr=0.05, inner_steps=steps, backend=backend)
    params = {n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}
    return algorithm, randomise_learned(algorithm, params), batch


def test_the_core_algorithms_are_the_registry_minus_those_with_their_own_meta_step():
    assert set(CORE_ALGORITHMS) == set(engine.ALGORITHMS) - {"reptile", "r2d2", "pretrain", "scratch", "protonet", "imaml", "hfmaml"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("name", CORE_ALGORITHMS)
def test_every_algorithm_on_every_backend_that_accepts_it_equals_the_plain_loop(name, backend, steps, activation):
    algorithm, params, batch = core_problem(name, backend, steps, activation)
    loop = algorithm.inner_loop(params, progress=0.5)
    reason = backends.BACKENDS[backend].refuses(algorithm.model, algorithm.loss, loop)
    if reason is not None:  # asked by name for something it does not implement: refused, never run
        with pytest.raises(ValueError, match=f"the {backend} backend cannot run this"):
            algorithm.meta_gradient(params, batch, progress=0.5)
        return
    grads = assert_matches_loop(algorithm, params, batch, progress=0.5)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_what_each_backend_accepts():
    """The capabilities the table in engine/backends.py states, algorithm by algorithm."""
    accepted = {}
    for name in CORE_ALGORITHMS:
        for steps in (1, 3):
            algorithm, params, _ = core_problem(name, "auto", steps)
            loop = algorithm.inner_loop(params, 0.5)
            accepted[name, steps] = {b for b, backend in backends.BACKENDS.items()
                                     if backend.refuses(algorithm.model, algorithm.loss, loop) is None}
    everything = set(BACKENDS)
    assert accepted["maml", 1] == accepted["fomaml", 1] == everything
    assert accepted["maml", 3] == everything - {"fused"}
    assert accepted["anil", 1] == accepted["mamlpp", 3] == accepted["alphamaml", 1] == everything - {"fused"}
    assert accepted["metasgd", 1] == {"closed_form", "torch.func"}  # per-entry rates: no low-rank form
    assert accepted["cavia", 1] == {"torch.func"}  # a context input: not a plain MLP


class PerLayerRates(Algorithm):
    """A subclass that answers the rates hook with per-layer (and per-step) rates: the case the
    old fast paths silently ignored."""

    name = "per-layer"

    def inner_rates(self, params, step):
        return {n: 0.01 * (1 + int(n[5])) * (1 + step) for n in self.adapt_names()}


@pytest.mark.parametrize("steps", [1, 2])
def test_a_rates_overriding_subclass_gets_the_same_answer_on_every_backend(steps):
    model, params, batch = make_problem()
    losses = {}
    for backend in BACKENDS:
        algorithm = PerLayerRates(model, inner_lr=0.05, inner_steps=steps, backend=backend)
        reason = backends.BACKENDS[backend].refuses(model, algorithm.loss, algorithm.inner_loop(params))
        if reason:
            assert backend == "fused"
            assert ("one fixed inner rate" if steps == 1 else "exactly one inner step") in reason
            with pytest.raises(ValueError, match="fused backend cannot run this"):
                algorithm.meta_gradient(params, batch)
            continue
        assert_matches_loop(algorithm, params, batch)
        losses[backend] = float(algorithm.meta_gradient(params, batch)[0])
    automatic = PerLayerRates(model, inner_lr=0.05, inner_steps=steps)
    assert automatic.backend_choice(shots=batch.x_support.shape[1]) != "fused"
    losses["auto"] = float(automatic.meta_gradient(params, batch)[0])
    assert max(losses.values()) - min(losses.values()) < 1e-12, losses


def test_auto_picks_the_fused_path_only_for_the_default_protocol():
    model = engine.MLP()
    assert engine.make_algorithm("maml", model).backend_choice(shots=10) == "fused"
    assert engine.make_algorithm("maml", model, inner_steps=5).backend_choice(shots=10) == "closed_form"
    assert engine.make_algorithm("maml", model, inner_steps=2).backend_choice(shots=5) == "lowrank"
    assert engine.make_algorithm("anil", model).backend_choice(shots=10) == "lowrank"
    assert engine.make_algorithm("fomaml", model, inner_steps=2).backend_choice(shots=5) == "closed_form"  # first order
    assert engine.make_algorithm("alphamaml", model).backend_choice(shots=10) == "closed_form"  # a learned rate
    assert engine.make_algorithm("maml", engine.MLP(activation="gelu")).backend_choice(shots=10) == "torch.func"
    assert engine.make_algorithm("cavia", model).backend_choice(shots=10) == "torch.func"
    explained = engine.make_algorithm("metasgd", model).explain_backends(shots=10)
    assert explained["closed_form"] == "runs" and explained["lowrank"].startswith("refuses: it needs one rate")
    assert "->fused" in repr(engine.make_algorithm("maml", model))


def test_a_loss_the_fast_paths_do_not_implement_takes_the_general_path():
    """Cross-entropy on a two-class toy problem: only torch.func accepts it, and it is exact."""
    generator = torch.Generator().manual_seed(0)
    model = engine.MLP(hidden=(6,), in_features=2, out_features=2, activation="relu")
    params = {n: v.double() for n, v in model.init(generator).items()}
    x = torch.randn(3, 4, 2, generator=generator, dtype=torch.float64)
    y = (x[..., 0] > 0).long()
    batch = engine.TaskBatch(x, y, x.flip(1), y.flip(1), {})
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.3, inner_steps=2, loss=engine.CrossEntropy())
    assert algorithm.backend_choice(shots=4) == "torch.func"
    loss, grads = algorithm.meta_gradient(params, batch)
    reference_params = leaves(params)
    total = 0.0
    for t in range(3):
        fast = dict(reference_params)
        for _ in range(2):
            inner = nnf.cross_entropy(model.forward(fast, x[t]), y[t])
            step = torch.autograd.grad(inner, list(fast.values()), create_graph=True)
            fast = {n: v - 0.3 * g for (n, v), g in zip(fast.items(), step)}
        total = total + nnf.cross_entropy(model.forward(fast, x[t].flip(0)), y[t].flip(0))
    expected = torch.autograd.grad(total / 3, list(reference_params.values()))
    torch.testing.assert_close(loss, (total / 3).detach())
    for name, g in zip(reference_params, expected):
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="they implement the mse loss"):
        engine.make_algorithm("maml", model, loss=engine.CrossEntropy(), backend="closed_form").meta_gradient(params, batch)


def test_an_extra_inner_loss_term_takes_the_general_path_and_is_exact():
    class Proximal(Algorithm):
        name = "proximal"

        def inner_regulariser(self, params):
            return lambda fast, anchor: 0.5 * sum(((fast[n] - anchor[n]) ** 2).sum() for n in anchor)

    model, params, batch = make_problem(hidden=(5,))
    algorithm = Proximal(model, inner_lr=0.05, inner_steps=3)
    assert algorithm.backend_choice(shots=5) == "torch.func"
    assert_matches_loop(algorithm, params, batch)


def directional_derivatives(algorithm, params, batch, other=None, seed=1, eps=1e-6, progress=0.0):
    """(central difference, meta-gradient . v, other's meta-gradient . v) along 3 random v."""
    _, grads = algorithm.meta_gradient(params, batch, progress=progress)
    other_grads = other.meta_gradient(params, batch, progress=progress)[1] if other is not None else grads
    generator = torch.Generator().manual_seed(seed)
    for _ in range(3):
        direction = {n: torch.randn(v.shape, generator=generator, dtype=v.dtype) for n, v in params.items()}
        plus = {n: params[n] + eps * direction[n] for n in params}
        minus = {n: params[n] - eps * direction[n] for n in params}
        numeric = (algorithm.meta_gradient(plus, batch, progress=progress)[0]
                   - algorithm.meta_gradient(minus, batch, progress=progress)[0]) / (2 * eps)
        dot = lambda g: float(sum((g[n] * direction[n]).sum() for n in params))  # noqa: E731
        yield float(numeric), dot(grads), dot(other_grads)


@pytest.mark.parametrize("backend", ["lowrank", "closed_form", "torch.func"])
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_is_exact_second_order_against_finite_differences(backend, steps):
    """Directional derivatives of the meta-loss by central differences in float64. A first-order
    meta-gradient misses the Hessian term and fails this by orders of magnitude more than the
    tolerance (checked on FOMAML)."""
    model, params, batch = make_problem(activation="tanh", hidden=(6, 6))
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.1, inner_steps=steps, backend=backend)
    first_order = engine.make_algorithm("fomaml", model, inner_lr=0.1, inner_steps=steps)
    for numeric, analytic, first in directional_derivatives(algorithm, params, batch, first_order):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))
        assert abs(first - numeric) > 1e3 * abs(analytic - numeric)


def test_fused_one_step_path_against_finite_differences():
    model, params, batch = make_problem(hidden=(6, 6))
    algorithm = engine.make_algorithm("maml", model, inner_lr=0.1, inner_steps=1, backend="fused")
    for numeric, analytic, _ in directional_derivatives(algorithm, params, batch, seed=2):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))


@pytest.mark.parametrize("hidden", [(8, 8), (5, 7, 6)])
@pytest.mark.parametrize("name", ["maml", "fomaml"])
def test_fused_path_matches_the_loop_for_deeper_networks(name, hidden):
    model, params, batch = make_problem(hidden=hidden)
    algorithm = engine.make_algorithm(name, model, inner_lr=0.05, inner_steps=1, backend="fused")
    assert_matches_loop(algorithm, params, batch)


@pytest.mark.parametrize("backend", ["lowrank", "closed_form", "torch.func"])
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


def test_anil_adapts_only_the_head():
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm("anil", model, inner_lr=0.05, inner_steps=2)
    history = algorithm.adapt(params, batch.x_support, batch.y_support, 2)
    for name in model.names:
        unchanged = torch.equal(history.params[-1][name][0], params[name])
        assert unchanged == (name not in model.head_names), name
    _, grads = algorithm.meta_gradient(params, batch)
    assert grads["layer0.weight"].abs().sum() > 0  # the body is still meta-learned


# -- Reptile ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["closed_form", "torch.func"])  # Reptile adapts on the dense backends
def test_reptile_matches_its_closed_form_on_a_linear_model(backend):
    """For y = x w + b the support loss is quadratic, so k SGD steps are (I - a H)^k in closed form."""
    model, params, batch = make_problem(hidden=())
    inner_lr, steps = 0.03, 4
    reptile = engine.make_algorithm("reptile", model, inner_lr=inner_lr, inner_steps=steps, backend=backend)
    assert reptile.backend_choice(shots=5).startswith(backend)
    _, grads = reptile.meta_gradient(params, batch)
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


@pytest.mark.parametrize("backend", ["closed_form", "torch.func"])
def test_reptile_with_one_step_is_the_mean_support_gradient(backend):
    model, params, batch = make_problem()
    reptile = engine.make_algorithm("reptile", model, inner_lr=0.05, inner_steps=1, backend=backend)
    _, grads = reptile.meta_gradient(params, batch)
    reference_params = leaves(params)
    loss = sum(nnf.mse_loss(model.forward(reference_params, batch.x_support[t]), batch.y_support[t])
               for t in range(batch.num_tasks)) / batch.num_tasks
    for name, expected in zip(reference_params, torch.autograd.grad(loss, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-9, atol=1e-12)


def test_reptile_in_float32_has_no_cancellation():
    """(theta - phi) / lr formed after the subtraction loses most digits in float32 (2.4% of the
    coordinates came out exactly zero on a trained run); the summed updates do not."""
    model, scale, batch64 = make_problem(hidden=(40, 40), tasks=25, shots=10)
    reptile = engine.make_algorithm("reptile", model, inner_lr=0.001, inner_steps=5)
    _, exact = reptile.meta_gradient(scale, batch64)
    params32 = {n: v.float() for n, v in scale.items()}
    batch32 = engine.TaskBatch(*(t.float() for t in (batch64.x_support, batch64.y_support, batch64.x_query, batch64.y_query)), {})
    _, grads = reptile.meta_gradient(params32, batch32)
    for name, g in grads.items():
        reference = exact[name]
        zeros = ((g == 0) & (reference != 0)).float().mean()
        assert zeros == 0, name
        relative = (g.double() - reference).norm() / reference.norm()
        assert relative < 1e-6, (name, float(relative))  # float32 rounding, nothing more
    # the old way, for contrast: it loses three to four digits here and zeroes some coordinates
    history = reptile.adapt(params32, batch32.x_support, batch32.y_support, 5)
    subtracted = {n: (params32[n] - history.params[-1][n].mean(0)) / 0.001 for n in params32}
    worst = max(float((subtracted[n].double() - exact[n]).norm() / exact[n].norm()) for n in params32)
    assert worst > 1e-4
    assert any(((subtracted[n] == 0) & (exact[n] != 0)).any() for n in params32)


# -- the baselines --------------------------------------------------------------------------------
def test_pretrain_is_the_plain_gradient_on_all_points():
    model, params, batch = make_problem()
    _, grads = engine.make_algorithm("pretrain", model).meta_gradient(params, batch)
    reference_params = leaves(params)
    x = torch.cat([batch.x_support, batch.x_query], 1)
    y = torch.cat([batch.y_support, batch.y_query], 1)
    loss = nnf.mse_loss(model.forward(reference_params, x), y)
    for name, expected in zip(reference_params, torch.autograd.grad(loss, list(reference_params.values()))):
        torch.testing.assert_close(grads[name], expected, rtol=1e-10, atol=1e-12)


def test_the_baselines_fine_tune_at_the_papers_tuned_step():
    model = engine.MLP()
    assert engine.make_algorithm("pretrain", model).inner_lr == 0.01
    assert engine.make_algorithm("pretrain", model, inner_lr=0.02).inner_lr == 0.02
    assert engine.make_algorithm("maml", model).inner_lr == 0.001


# -- adaptation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["maml", "anil", "metasgd", "mamlpp", "cavia", "alphamaml", "r2d2", "pretrain"])
def test_batched_adaptation_equals_one_task_at_a_time(algo):
    """vmapped/batched adaptation over tasks vs adapting each task alone."""
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm(algo, model, inner_lr=0.05 if algo != "cavia" else 0.5, inner_steps=3)
    meta = {n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}
    together = algorithm.adapt(meta, batch.x_support, batch.y_support, 3, batch.x_query, batch.y_query)
    for t in range(batch.num_tasks):
        alone = algorithm.adapt(meta, batch.x_support[t], batch.y_support[t], 3, batch.x_query[t], batch.y_query[t])
        for step in range(4):
            torch.testing.assert_close(together.support_loss[step][t], alone.support_loss[step][0])
            torch.testing.assert_close(together.query_loss[step][t], alone.query_loss[step][0])
            torch.testing.assert_close(together.grad_norm[step][t], alone.grad_norm[step][0])
            for name in together.params[step]:
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


def test_evaluation_rate_override_scales_learned_rates():
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm("metasgd", model, inner_lr=0.05)
    meta = {n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}
    doubled = {**meta, **{n: v * 2 for n, v in meta.items() if n.startswith("lr.")}}
    a = algorithm.adapt(meta, batch.x_support, batch.y_support, 2, inner_lr=0.1)
    b = algorithm.adapt(doubled, batch.x_support, batch.y_support, 2)
    for name in model.names:
        torch.testing.assert_close(a.params[-1][name], b.params[-1][name])
    assert math.isclose(algorithm.inner_lr, 0.05)


def test_hooks_the_fast_paths_do_not_implement_send_them_to_the_general_path():
    """Found in review: a one-step loss weight other than 1 and a loss that subclasses MSE under its
    name both ran on the fused path and gave another answer."""
    class HalfWeight(Algorithm):
        name = "half-weight"

        def step_weights(self, steps, progress):
            return (0.5,) * steps

    class Huber(engine.MeanSquaredError):
        def per_task(self, prediction, target):
            return nnf.huber_loss(prediction, target, reduction="none", delta=0.1).mean(dim=(-2, -1))

    model, params, batch = make_problem()
    half = HalfWeight(model, inner_lr=0.01)
    assert half.backend_choice(shots=5) != "fused"
    with pytest.raises(ValueError, match="weighted 1"):
        HalfWeight(model, inner_lr=0.01, backend="fused").meta_gradient(params, batch)
    assert_matches_loop(half, params, batch)
    huber = engine.make_algorithm("maml", model, inner_lr=0.01, loss=Huber())
    assert huber.backend_choice(shots=5) == "torch.func"
    general = engine.make_algorithm("maml", model, inner_lr=0.01, loss=Huber(), backend="torch.func")
    torch.testing.assert_close(huber.meta_gradient(params, batch)[0], general.meta_gradient(params, batch)[0])
