"""The cost of second order (issue 10): Hessian-vector products against dense Hessians, the
finite-difference error's O(r^2)-then-round-off shape, Hessian-free MAML against exact MAML,
iMAML against the implicit gradient by a direct solve and against unrolled differentiation at
convergence, conjugate gradient and the sharpness against dense linear algebra. All in float64."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import hessian

import engine
from engine import backends
from engine.conv import Conv4
from engine.functional import dense_adapt, dense_meta_loss, func_gradients, InnerLoop
from engine.hessian import conjugate_gradient, dot, fd_hvp, func_hvp, hvp, hvp_double_backward, sharpness
from engine.losses import CrossEntropy, MeanSquaredError
from engine.tasks import make_task_family


def smooth_setup(tasks=3, shots=5, hidden=(6,), seed=0):
    """A tanh MLP (smooth, so finite differences behave) and a sinusoid meta-batch, in float64."""
    model = engine.MLP(hidden, activation="tanh")
    params = {n: v.double() for n, v in model.init(torch.Generator().manual_seed(seed)).items()}
    family = make_task_family("sinusoid", dtype=torch.float64)
    return model, params, family.sample(tasks, shots, shots, torch.Generator().manual_seed(seed + 1))


def flat_tools(model, params):
    names = list(model.names)
    shapes = [torch.Size(model.shapes()[n]) for n in names]
    sizes = [math.prod(shape) for shape in shapes]

    def unflat(vector):
        out, i = {}, 0
        for n, shape, size in zip(names, shapes, sizes):
            out[n] = vector[i:i + size].view(shape)
            i += size
        return out

    def flat(values, t=None):
        return torch.cat([(values[n] if t is None else values[n][t]).reshape(-1) for n in names])
    return names, flat, unflat


def dense_hessian(model, loss, params, x, y, t):
    names, flat, unflat = flat_tools(model, params)
    point = flat(params) if params[names[0]].dim() == len(model.shapes()[names[0]]) else flat(params, t)
    return hessian(lambda v: loss.per_task(model.forward(unflat(v), x[t]), y[t]))(point)


def random_vectors(model, params, tasks, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return {n: torch.randn(tasks, *params[n].shape, generator=generator, dtype=torch.float64) for n in model.names}


# -- Hessian-vector products -----------------------------------------------------------------------
def test_hessian_vector_products_equal_the_dense_hessian_times_the_vector():
    model, params, batch = smooth_setup()
    loss = MeanSquaredError()
    vectors = random_vectors(model, params, 3)
    products = hvp(model, loss, params, batch.x_support, batch.y_support, vectors)
    reference = hvp_double_backward(model, loss, params, batch.x_support, batch.y_support, vectors)
    names, flat, _ = flat_tools(model, params)
    for t in range(3):
        expected = dense_hessian(model, loss, params, batch.x_support, batch.y_support, t) @ flat(vectors, t)
        torch.testing.assert_close(flat(products, t), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(flat(reference, t), expected, rtol=1e-10, atol=1e-12)


def test_hessian_vector_products_at_per_task_parameters_through_the_conv_net():
    model = Conv4((3, 3), input_shape=(1, 8, 8), out_features=3)
    params = {n: v.double() for n, v in model.init(torch.Generator().manual_seed(0)).items()}
    per_task = {n: v + 0.01 * torch.randn(2, *v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
                for n, v in params.items()}
    x = torch.rand(2, 6, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[0, 1, 2, 0, 1, 2], [2, 1, 0, 2, 1, 0]])
    vectors = random_vectors(model, params, 2)
    products = hvp(model, CrossEntropy(), per_task, x, y, vectors)
    reference = hvp_double_backward(model, CrossEntropy(), per_task, x, y, vectors)
    names, flat, _ = flat_tools(model, params)
    for t in range(2):
        expected = dense_hessian(model, CrossEntropy(), per_task, x, y, t) @ flat(vectors, t)
        torch.testing.assert_close(flat(products, t), expected, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(flat(reference, t), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_the_mlp_fast_path_hessian_vector_products_equal_the_general_path(activation):
    """The hand-derived gradients' double backward (what hvp runs on an MLP with MSE) against
    torch.func's jvp of grad, at shared and at per-task parameters."""
    model = engine.MLP((7, 5), activation=activation)
    assert backends.BACKENDS["closed_form"].refuses(model, MeanSquaredError(), InnerLoop(names=tuple(model.names), rates=())) is None
    params = {n: v.double() for n, v in model.init(torch.Generator().manual_seed(0)).items()}
    batch = make_task_family("sinusoid", dtype=torch.float64).sample(3, 6, 2, torch.Generator().manual_seed(1))
    vectors = random_vectors(model, params, 3)
    per_task = {n: v + 0.1 * vectors[n] for n, v in params.items()}
    for at in (params, per_task):
        fast = hvp(model, MeanSquaredError(), at, batch.x_support, batch.y_support, vectors)
        general = func_hvp(model, MeanSquaredError(), at, batch.x_support, batch.y_support, vectors)
        for name in model.names:
            torch.testing.assert_close(fast[name], general[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("name", ["imaml", "hfmaml"])
def test_imaml_and_hfmaml_compute_the_same_on_the_fast_and_the_general_path(name, activation):
    """Their inner loops and products take the closed-form MLP path when they can (iMAML's proximal
    term included); forcing torch.func must give the same meta-gradient."""
    model = engine.MLP((8, 8), activation=activation)
    params = {n: v.double() for n, v in model.init(torch.Generator().manual_seed(0)).items()}
    batch = make_task_family("sinusoid", dtype=torch.float64).sample(4, 5, 5, torch.Generator().manual_seed(2))
    results = {}
    for backend in ("auto", "closed_form", "torch.func"):
        algorithm = engine.make_algorithm(name, model, inner_lr=0.02, inner_steps=4, backend=backend)
        results[backend] = algorithm.meta_step(params, batch)
    assert "closed_form" in results["auto"].backend and "torch.func" in results["torch.func"].backend
    for backend in ("auto", "closed_form"):
        torch.testing.assert_close(results[backend].loss, results["torch.func"].loss, rtol=1e-12, atol=1e-14)
        for key in model.names:
            torch.testing.assert_close(results[backend].grads[key], results["torch.func"].grads[key], rtol=1e-8, atol=1e-11)


def test_the_finite_difference_error_falls_as_r_squared_then_rises_with_round_off():
    model, params, batch = smooth_setup()
    loss = MeanSquaredError()
    vectors = random_vectors(model, params, 3)
    length = dot(vectors, vectors).sqrt()
    unit = {n: v / length.view(-1, *([1] * (v.dim() - 1))) for n, v in vectors.items()}
    exact = hvp(model, loss, params, batch.x_support, batch.y_support, unit)
    loop = InnerLoop(names=tuple(model.names), rates=(), second_order=False)

    def gradients_at(at):
        return func_gradients(model, loss, at, batch.x_support, batch.y_support, loop, 0, False)[1]

    def error(r):
        approx = fd_hvp(gradients_at, params, unit, r, 3, model)
        difference = {n: approx[n] - exact[n] for n in exact}
        return float((dot(difference, difference).sqrt() / dot(exact, exact).sqrt()).max())

    errors = {r: error(r) for r in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-9, 1e-11)}
    for big, small in ((1e-1, 1e-2), (1e-2, 1e-3), (1e-3, 1e-4)):
        assert 30 < errors[big] / errors[small] < 300, errors  # a tenth of r, a hundredth of the error: O(r^2)
    best = min(errors.values())
    assert best < 1e-8 and errors[1e-11] > 100 * best and errors[1e-9] > errors[1e-6], errors  # then round-off, ~eps / r
    with pytest.raises(ValueError, match="must be positive"):
        fd_hvp(gradients_at, params, unit, 0.0, 3, model)


# -- Hessian-free MAML -----------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 3])
def test_hessian_free_maml_approaches_exact_maml_as_r_shrinks(steps):
    model, params, batch = smooth_setup(tasks=4)
    exact = engine.make_algorithm("maml", model, inner_lr=0.05, inner_steps=steps).meta_gradient(params, batch)[1]
    first_order = engine.make_algorithm("fomaml", model, inner_lr=0.05, inner_steps=steps).meta_gradient(params, batch)[1]

    def relative(grads):
        return math.sqrt(sum(float((grads[n] - exact[n]).pow(2).sum()) for n in exact) /
                         sum(float(exact[n].pow(2).sum()) for n in exact))

    errors = [relative(engine.make_algorithm("hfmaml", model, inner_lr=0.05, inner_steps=steps, options={"r": r})
                       .meta_gradient(params, batch)[1]) for r in (1e-2, 1e-3, 1e-4)]
    assert 30 < errors[0] / errors[1] < 300 and 30 < errors[1] / errors[2] < 300, errors
    assert errors[2] < 1e-8 < relative(first_order), (errors, relative(first_order))  # the Hessian term is really there


def test_hessian_free_maml_runs_the_trainer_and_refuses_a_bad_step_in_one_sentence():
    from engine.trainer import MetaLearner

    config = engine.RunConfig().replace(model={"hidden": (8,)}, algo={"name": "hfmaml", "inner_lr": 0.01, "inner_steps": 2},
                                        train={"meta_batch_size": 3, "shots": 5})
    learner = MetaLearner(config, "cpu")
    metrics = learner.outer_step()
    assert metrics.finite and "finite differences" in metrics.backend and len(metrics.inner_grad_norms) == 2
    with pytest.raises(ValueError, match="option r of hfmaml"):
        engine.make_algorithm("hfmaml", engine.MLP(), options={"r": 0})


# -- iMAML -----------------------------------------------------------------------------------------
def proximal_minimiser(algorithm, params, batch):
    loop = algorithm.inner_loop(params)
    backend = backends.choose_dense("auto", algorithm.model, algorithm.loss, loop)
    return dense_adapt(backend.gradients, algorithm.model, algorithm.loss, params, batch.x_support, batch.y_support, loop,
                       keep_params=False, final_gradient=False).final_params


def test_imaml_is_the_implicit_gradient_by_a_direct_solve():
    model, params, batch = smooth_setup()
    lam = 2.0
    algorithm = engine.make_algorithm("imaml", model, inner_lr=0.02, inner_steps=50, options={"lam": lam, "cg_steps": 100})
    step = algorithm.meta_step(params, batch)
    phi = proximal_minimiser(algorithm, params, batch)
    names, flat, unflat = flat_tools(model, params)
    expected = 0
    for t in range(3):
        point = flat(phi, t)
        H = hessian(lambda v: algorithm.loss.per_task(model.forward(unflat(v), batch.x_support[t]), batch.y_support[t]))(point)
        query = torch.func.grad(lambda v: algorithm.loss.per_task(model.forward(unflat(v), batch.x_query[t]), batch.y_query[t]))(point)
        expected = expected + torch.linalg.solve(torch.eye(len(point), dtype=torch.float64) + H / lam, query) / 3
    torch.testing.assert_close(flat(step.grads), expected, rtol=1e-9, atol=1e-12)
    assert float(step.diagnostics["cg_residual"]) < 1e-10
    few = engine.make_algorithm("imaml", model, inner_lr=0.02, inner_steps=50, options={"lam": lam, "cg_steps": 2}).meta_step(params, batch)
    assert float(few.diagnostics["cg_residual"]) > float(step.diagnostics["cg_residual"])  # two CG steps solve it less


def test_at_the_inner_minimiser_the_implicit_gradient_equals_differentiating_the_unrolled_loop():
    """With the proximal inner loop run to convergence, d L_q(phi*(theta)) / d theta by autograd
    through every inner step is the implicit gradient iMAML computes without any of them."""
    model, params, batch = smooth_setup(tasks=2)
    algorithm = engine.make_algorithm("imaml", model, inner_lr=0.05, inner_steps=400, options={"lam": 4.0, "cg_steps": 60})
    implicit = algorithm.meta_step(params, batch).grads
    leaves = {n: v.clone().requires_grad_() for n, v in params.items()}
    loop = algorithm.inner_loop(leaves)
    unrolled_loop = InnerLoop(names=loop.names, rates=loop.rates, second_order=True, regulariser=loop.regulariser, anchor=leaves)
    objective, _, _ = dense_meta_loss(func_gradients, model, algorithm.loss, leaves, batch, unrolled_loop)
    unrolled = torch.autograd.grad(objective, [leaves[n] for n in model.names])
    for name, value in zip(model.names, unrolled):
        torch.testing.assert_close(implicit[name], value, rtol=1e-6, atol=1e-9)


def test_imaml_trains_logs_its_cg_residual_and_refuses_bad_options(tmp_path):
    from engine.checkpoint import RunDirectory
    from engine.trainer import train

    config = engine.RunConfig().replace(model={"hidden": (8,)}, algo={"name": "imaml", "options": {"lam": 1.0, "cg_steps": 3}},
                                        train={"steps": 4, "meta_batch_size": 3, "shots": 5, "log_every": 2, "checkpoint_every": 4})
    train(config, tmp_path / "run", device="cpu")
    records = RunDirectory(tmp_path / "run").read_metrics()
    assert records and all(math.isfinite(r["diagnostics"]["cg_residual"]) and r["diagnostics"]["cg_residual"] >= 0
                           for r in records)
    for options, match in (({"lam": 0}, "option lam of imaml"), ({"cg_steps": 0}, "option cg_steps of imaml"),
                           ({"cg_steps": "x"}, "option cg_steps of imaml")):
        with pytest.raises(ValueError, match=match):
            engine.make_algorithm("imaml", engine.MLP(), options=options)


# -- conjugate gradient and the sharpness ----------------------------------------------------------
def test_conjugate_gradient_solves_symmetric_positive_definite_systems_per_task():
    generator = torch.Generator().manual_seed(0)
    factors = torch.randn(3, 7, 7, generator=generator, dtype=torch.float64)
    matrices = factors @ factors.transpose(1, 2) + 0.5 * torch.eye(7, dtype=torch.float64)
    b = {"w": torch.randn(3, 7, generator=generator, dtype=torch.float64)}
    solution, residual = conjugate_gradient(lambda v: {"w": torch.einsum("tij,tj->ti", matrices, v["w"])}, b, 7)
    torch.testing.assert_close(solution["w"], torch.linalg.solve(matrices, b["w"]), rtol=1e-8, atol=1e-10)
    assert float(residual.max()) < 1e-8
    _, early = conjugate_gradient(lambda v: {"w": torch.einsum("tij,tj->ti", matrices, v["w"])}, b, 2)
    assert float(early.min()) > float(residual.max())


def test_the_sharpness_is_the_largest_eigenvalue_of_the_dense_hessian():
    model, params, batch = smooth_setup(hidden=(5,))
    loss = MeanSquaredError()
    found = sharpness(model, loss, params, batch.x_support, batch.y_support, model.names, iterations=300,
                      generator=torch.Generator().manual_seed(0))
    for t in range(3):
        eigenvalues = torch.linalg.eigvalsh(dense_hessian(model, loss, params, batch.x_support, batch.y_support, t))
        top = eigenvalues[eigenvalues.abs().argmax()]
        assert float(found[t]) == pytest.approx(float(top), rel=1e-6)


def test_conjugate_gradient_stops_a_task_at_non_positive_curvature_instead_of_blowing_up():
    """I + H/lam with an eigenvalue of H below -lam is indefinite: plain CG can divide by a zero or
    negative curvature and leave a residual far above 1. The solver stops that task where it was."""
    matrices = torch.stack([torch.diag(torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)),
                            torch.diag(torch.tensor([1.0, -1.0, 1e-3], dtype=torch.float64))])
    b = {"w": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)}
    solution, residual = conjugate_gradient(lambda v: {"w": torch.einsum("tij,tj->ti", matrices, v["w"])}, b, 10)
    torch.testing.assert_close(solution["w"][0], torch.tensor([0.5, 1.0, 1 / 3], dtype=torch.float64))
    assert float(residual[0]) < 1e-12
    # task 1: b.A b = 0, non-positive curvature on the first direction: x stays at 0, residual 1
    assert torch.equal(solution["w"][1], torch.zeros(3, dtype=torch.float64)) and float(residual[1]) == pytest.approx(1.0)
