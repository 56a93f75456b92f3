"""Shared fixtures: small float64 problems for exact checks, and a quiet single thread."""

from __future__ import annotations

import pytest
import torch

import engine


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
