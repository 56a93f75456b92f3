"""The new algorithms against independent references in float64: MAML++'s schedules (the reference
code's formulas), CAVIA's context loop written by hand, Alpha-MAML's hypergradients in closed form,
and R2-D2's ridge head against the primal normal equations and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as nnf

import engine
from engine.config import RunConfig
from engine.trainer import MetaLearner
from tests.conftest import assert_matches_loop, leaves, make_problem
from tests.test_gradients import directional_derivatives


def double_init(algorithm, seed=0):
    return {n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(seed), "cpu").items()}


# -- MAML++ ---------------------------------------------------------------------------------------
def reference_importance(steps, epoch, msl_epochs):
    """get_per_step_loss_importance_vector of the MAML++ reference code, transcribed."""
    weights = [1.0 / steps] * steps
    decay = 1.0 / steps / msl_epochs
    floor = 0.03 / steps
    for i in range(steps - 1):
        weights[i] = max(weights[i] - epoch * decay, floor)
    weights[-1] = min(weights[-1] + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return weights


@pytest.mark.parametrize("epoch", [0, 3, 7, 9.5])
def test_mamlpp_multi_step_loss_weights_follow_the_reference_code(epoch):
    model = engine.MLP()
    algorithm = engine.make_algorithm("mamlpp", model, options={"msl_fraction": 0.1})
    total_epochs = 100  # msl over the first 10 of 100 epochs = a fraction of 0.1
    weights = algorithm.step_weights(5, epoch / total_epochs)
    assert weights == pytest.approx(reference_importance(5, epoch, 10))
    assert sum(weights) == pytest.approx(1.0)


def test_mamlpp_schedules():
    model = engine.MLP()
    algorithm = engine.make_algorithm("mamlpp", model, options={"first_order_fraction": 0.25, "msl_fraction": 0.1})
    assert algorithm.inner_steps == 5 and algorithm.inner_lr == 0.001
    assert algorithm.step_weights(5, 0.1) is None and algorithm.step_weights(5, 0.5) is None  # last step only
    assert not algorithm.second_order(0.0) and not algorithm.second_order(0.249) and algorithm.second_order(0.25)
    assert algorithm.outer_lr(1e-3, 0.0) == pytest.approx(1e-3)
    assert algorithm.outer_lr(1e-3, 0.5) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert algorithm.outer_lr(1e-3, 1.0) == pytest.approx(1e-5)
    off = engine.make_algorithm("mamlpp", model, options={"cosine_outer_lr": False, "learn_rates": False})
    assert off.outer_lr(1e-3, 0.7) == 1e-3 and not any(n.startswith("lslr.") for n in off.init(torch.Generator()))


def test_mamlpp_learns_a_rate_per_layer_and_step_and_reuses_the_last_past_training():
    model, _, batch = make_problem()
    algorithm = engine.make_algorithm("mamlpp", model, inner_lr=0.05, inner_steps=3)
    params = double_init(algorithm)
    assert {n: tuple(v.shape) for n, v in params.items() if n.startswith("lslr.")} == {f"lslr.{n}": (3,) for n in model.names}
    generator = torch.Generator().manual_seed(1)
    for n in model.names:
        params[f"lslr.{n}"] = 0.02 + 0.05 * torch.rand(3, generator=generator, dtype=torch.float64)
    for progress in (0.05, 0.5):  # first order with the multi-step loss, then second order on the last step
        grads = assert_matches_loop(algorithm, params, batch, progress=progress)
        assert all(grads[f"lslr.{n}"].abs().min() > 0 for n in model.names)
    rates = algorithm.inner_rates(params, 7)  # past the trained steps: the last step's rate
    assert all(rates[n] == params[f"lslr.{n}"][2] for n in model.names)
    for numeric, analytic, _ in directional_derivatives(algorithm, params, batch, progress=0.5):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))


def test_mamlpp_trains_with_cosine_outer_rate_and_logs_its_rates():
    config = RunConfig().replace(algo={"name": "mamlpp", "inner_steps": 2},
                                 train={"steps": 10, "meta_batch_size": 3, "shots": 4, "query": 4})
    learner = MetaLearner(config, "cpu")
    rates = []
    for _ in range(10):
        metrics = learner.outer_step()
        rates.append(metrics.outer_lr)
    assert rates[0] == pytest.approx(1e-3) and rates == sorted(rates, reverse=True) and rates[-1] < 1e-4
    assert set(metrics.learned) == {f"lslr.{n}@{s}" for n in learner.model.names for s in (1, 2)}
    section = learner.algorithm.inspect(learner.params)[0]
    assert section.columns == ("1", "2") and len(section.rows) == 6


# -- CAVIA ----------------------------------------------------------------------------------------
def test_cavia_matches_a_hand_written_context_loop():
    _, _, batch = make_problem()
    algorithm = engine.make_algorithm("cavia", engine.MLP(hidden=(8, 8)), inner_lr=0.7, inner_steps=2,
                                      options={"context_size": 3})
    assert algorithm.inner_lr == 0.7 and algorithm.model.base.in_features == 4
    params = double_init(algorithm)
    assert "context" not in params  # not a meta-parameter
    loss, grads = algorithm.meta_gradient(params, batch)
    base = algorithm.model.base
    theta = leaves(params)
    total = 0.0
    for t in range(batch.num_tasks):
        context = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        joined = lambda x, c: torch.cat([x, c.expand(x.shape[0], 3)], dim=1)  # noqa: E731
        for _ in range(2):
            inner = nnf.mse_loss(base.forward(theta, joined(batch.x_support[t], context)), batch.y_support[t])
            (step,) = torch.autograd.grad(inner, [context], create_graph=True)
            context = context - 0.7 * step
        total = total + nnf.mse_loss(base.forward(theta, joined(batch.x_query[t], context)), batch.y_query[t])
    total = total / batch.num_tasks
    torch.testing.assert_close(loss, total.detach())
    for name, g in zip(theta, torch.autograd.grad(total, list(theta.values()))):
        torch.testing.assert_close(grads[name], g, rtol=1e-9, atol=1e-11)


def test_cavia_adapts_only_the_context_which_starts_at_zero_for_every_task():
    _, _, batch = make_problem()
    algorithm = engine.make_algorithm("cavia", engine.MLP(hidden=(8, 8)), inner_steps=3)
    params = double_init(algorithm)
    history = algorithm.adapt(params, batch.x_support, batch.y_support, 3, batch.x_query, batch.y_query)
    assert torch.equal(history.params[0]["context"], torch.zeros(batch.num_tasks, 5, dtype=torch.float64))
    assert not torch.equal(history.params[3]["context"], history.params[0]["context"])
    for name in algorithm.model.base.names:
        assert torch.equal(history.params[3][name][0], params[name])
    assert float(history.support_loss[3].mean()) < float(history.support_loss[0].mean())
    section = algorithm.inspect(params, history)[0]
    assert len(section.rows) == 5 and section.columns[0] == "0"
    for numeric, analytic, _ in directional_derivatives(algorithm, params, batch):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))


# -- Alpha-MAML -----------------------------------------------------------------------------------
def test_alphamaml_alpha_gradient_is_the_closed_form_hypergradient():
    """One inner step: dL_q(theta - alpha g_s)/d alpha = -grad L_q(theta') . g_s, per task averaged."""
    model, params, batch = make_problem()
    algorithm = engine.make_algorithm("alphamaml", model, inner_lr=0.05)
    meta = {**params, "alpha": torch.tensor(0.05, dtype=torch.float64)}
    _, grads = algorithm.meta_gradient(meta, batch)
    expected = 0.0
    for t in range(batch.num_tasks):
        theta = leaves(params)
        support = nnf.mse_loss(model.forward(theta, batch.x_support[t]), batch.y_support[t])
        g_support = torch.autograd.grad(support, list(theta.values()))
        adapted = {n: (theta[n] - 0.05 * g).detach().requires_grad_() for n, g in zip(theta, g_support)}
        query = nnf.mse_loss(model.forward(adapted, batch.x_query[t]), batch.y_query[t])
        g_query = torch.autograd.grad(query, list(adapted.values()))
        expected = expected - sum((a * b).sum() for a, b in zip(g_query, g_support))
    torch.testing.assert_close(grads["alpha"], expected / batch.num_tasks, rtol=1e-10, atol=1e-12)


def test_alphamaml_moves_both_rates_by_their_hypergradient_rules():
    config = RunConfig().replace(algo={"name": "alphamaml", "inner_lr": 0.01,
                                       "options": {"inner_hyper_lr": 1e-4, "outer_hyper_lr": 1e-6}},
                                 train={"steps": 100, "meta_batch_size": 4, "shots": 5, "query": 5})
    learner = MetaLearner(config, "cpu")
    for step in range(3):
        batch = learner.sample_batch()
        before = {n: v.detach().clone() for n, v in learner.params.items()}
        beta_before = float(learner.buffers.get("alphamaml.beta", 1e-3))
        direction = {n: learner.buffers.get(f"alphamaml.direction.{n}") for n in learner.model.names}
        grads = learner.algorithm.meta_step(learner.params, batch).grads
        learner.outer_step(batch=batch)
        alpha_expected = max(float(before["alpha"]) - 1e-4 * float(grads["alpha"]), 1e-6)
        assert float(learner.params["alpha"].detach()) == pytest.approx(alpha_expected, rel=1e-6)
        beta = float(learner.buffers["alphamaml.beta"])
        if step == 0:
            assert beta == pytest.approx(1e-3)
        else:
            agreement = sum(float((grads[n].double() * direction[n].double()).sum()) for n in learner.model.names)
            assert beta == pytest.approx(beta_before + 1e-6 * agreement, rel=1e-5)
        assert learner.optimizer.param_groups[0]["lr"] == beta
    metrics = learner.outer_step()
    assert set(metrics.learned) == {"alpha", "beta"} and metrics.learned["beta"] == metrics.outer_lr


# -- R2-D2 ----------------------------------------------------------------------------------------
def test_r2d2_head_is_the_ridge_solution_of_the_primal_normal_equations():
    model, _, batch = make_problem()
    algorithm = engine.make_algorithm("r2d2", model)
    params = double_init(algorithm)
    params["r2d2.log_lambda"] = torch.tensor(math.log(0.3), dtype=torch.float64)
    params["r2d2.scale"] = torch.tensor(1.7, dtype=torch.float64)
    params["r2d2.offset"] = torch.tensor(-0.2, dtype=torch.float64)
    assert not set(model.head_names) & set(params)  # the head is solved, never learned
    head = algorithm.solve(params, batch.x_support, batch.y_support)
    features = model.features(params, batch.x_support)
    for t in range(batch.num_tasks):
        phi = torch.cat([features[t], torch.ones(features.shape[1], 1, dtype=torch.float64)], dim=1)
        w = torch.linalg.solve(phi.T @ phi + 0.3 * torch.eye(phi.shape[1], dtype=torch.float64), phi.T @ batch.y_support[t])
        torch.testing.assert_close(head["layer2.weight"][t], 1.7 * w[:-1])
        torch.testing.assert_close(head["layer2.bias"][t], 1.7 * w[-1] - 0.2)


def test_r2d2_meta_gradient_flows_through_the_solve_exactly():
    model, _, batch = make_problem(activation="tanh", hidden=(6, 6))
    algorithm = engine.make_algorithm("r2d2", model)
    params = double_init(algorithm)
    _, grads = algorithm.meta_gradient(params, batch)
    assert all(grads[n].abs().sum() > 0 for n in ("layer0.weight", "r2d2.log_lambda", "r2d2.scale", "r2d2.offset"))
    for numeric, analytic, _ in directional_derivatives(algorithm, params, batch):
        assert abs(analytic - numeric) < 1e-7 * max(1.0, abs(numeric))


def test_r2d2_adapts_in_one_step_from_the_offset():
    model, _, batch = make_problem()
    algorithm = engine.make_algorithm("r2d2", model)
    params = double_init(algorithm)
    history = algorithm.adapt(params, batch.x_support, batch.y_support, 4, batch.x_query, batch.y_query)
    zero = model.forward(history.params[0], batch.x_query)
    assert torch.allclose(zero, torch.zeros_like(zero))  # offset 0: predicts 0 before the solve
    assert float(history.support_loss[1].mean()) < float(history.support_loss[0].mean())
    for s in (2, 3, 4):  # more steps change nothing
        torch.testing.assert_close(history.query_loss[s], history.query_loss[1])


def test_mamlpp_asks_a_model_with_per_step_state_for_it_and_the_core_passes_the_step():
    """The per-step batch-norm hook: MAML++ asks for ``with_per_step_norm(steps)`` and every forward
    learns the inner step it is at (support at step s, query after step s + 1)."""
    seen = []

    class PerStep(engine.MLP):
        steps = None

        def with_per_step_norm(self, steps):
            model = PerStep(self.hidden, self.activation, self.in_features, self.out_features)
            model.steps = steps
            return model

        def forward(self, params, x, step=None):
            seen.append(step)
            return super().forward(params, x, step)

    _, params, batch = make_problem(hidden=(4,))
    algorithm = engine.make_algorithm("mamlpp", PerStep(hidden=(4,)), inner_steps=3)
    assert algorithm.model.steps == 3
    assert algorithm.backend_choice(shots=5) == "torch.func"  # not a plain MLP: no fast path
    meta = {**{n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}, **params}
    seen.clear()
    algorithm.meta_gradient(meta, batch, progress=0.5)
    assert sorted(set(s for s in seen if s is not None)) == [0, 1, 2, 3]


def test_r2d2_solves_one_hot_codes_for_class_index_targets():
    generator = torch.Generator().manual_seed(0)
    model = engine.MLP(hidden=(6,), in_features=2, out_features=3)
    algorithm = engine.make_algorithm("r2d2", model, loss=engine.CrossEntropy())
    params = double_init(algorithm)
    x = torch.randn(2, 6, 2, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 6), generator=generator)
    batch = engine.TaskBatch(x, y, x, y, {})
    loss, grads = algorithm.meta_gradient(params, batch)
    assert torch.isfinite(loss) and grads["layer0.weight"].abs().sum() > 0
    head = algorithm.solve(params, x, y)
    assert head["layer1.weight"].shape == (2, 6, 3)
