"""Shared fixtures: small float64 problems for exact checks, the independent reference loop, and a
quiet single thread."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import engine


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path, monkeypatch):
    """The explorer's autosave and preferences go to a temporary place, never the user's home."""
    monkeypatch.setenv("MAML_TUI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MAML_TUI_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_problem(hidden=(8, 8), activation="relu", tasks=4, shots=5, query=6, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    family = engine.make_task_family("sinusoid", dtype=dtype)
    batch = family.sample(tasks, shots, query, generator)
    model = engine.MLP(hidden=hidden, activation=activation)
    params = model.init(generator, dtype=dtype)
    return model, params, batch


def leaves(params):
    return {n: v.detach().clone().requires_grad_() for n, v in params.items()}


def reference_meta_loss(algorithm, params, batch, progress=0.0, loss_fn=nnf.mse_loss):
    """The tutorial implementation: one task at a time, ``autograd.grad(create_graph=True)`` per
    inner step, ``nnf.mse_loss`` (or ``loss_fn``, e.g. ``nnf.cross_entropy``). It uses only the algorithm's answers to its hooks (which
    parameters adapt, the rate of each at each step, where a task starts, the step weights, the
    order) and the model's forward; nothing of the engine's batching, backends or kernels."""
    model = algorithm.model
    names = algorithm.adapt_names()
    steps = algorithm.inner_steps
    weights = algorithm.step_weights(steps, progress)
    weights = weights if weights is not None else (0.0,) * (steps - 1) + (1.0,)
    second_order = algorithm.second_order(progress)
    start = algorithm.inner_start(params, batch.num_tasks)
    regulariser = algorithm.inner_regulariser(params)
    total = 0.0
    for t in range(batch.num_tasks):
        fast = {n: v[t] if model.is_batched(n, v) else v for n, v in start.items()}
        fast = {n: v if v.requires_grad else v.clone().requires_grad_() for n, v in fast.items()}  # CAVIA's zero context
        for s in range(steps):
            loss = loss_fn(model.forward(fast, batch.x_support[t], s), batch.y_support[t])
            if regulariser is not None:
                loss = loss + regulariser(fast, algorithm.model_params(params))
            grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=second_order, allow_unused=True)
            grads = [torch.zeros_like(fast[n]) if g is None else g for n, g in zip(names, grads)]  # e.g. another step's norm
            rates = algorithm.inner_rates(params, s)
            for n, g in zip(names, grads):
                fast[n] = fast[n] - rates[n] * (g if second_order else g.detach())
            if weights[s]:
                total = total + weights[s] * loss_fn(model.forward(fast, batch.x_query[t], s + 1), batch.y_query[t])
    return total / batch.num_tasks


def assert_matches_loop(algorithm, params, batch, progress=0.0, rtol=1e-9, atol=1e-11, loss_fn=nnf.mse_loss):
    """The engine's outer loss and meta-gradient equal the reference loop's, for every meta-parameter."""
    loss, grads = algorithm.meta_gradient(params, batch, progress=progress)
    reference_params = leaves(params)
    reference = reference_meta_loss(algorithm, reference_params, batch, progress, loss_fn)
    expected = torch.autograd.grad(reference, list(reference_params.values()), allow_unused=True)
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-10, atol=1e-12)
    for name, g in zip(reference_params, expected):
        g = torch.zeros_like(reference_params[name]) if g is None else g
        torch.testing.assert_close(grads[name], g, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    return grads
