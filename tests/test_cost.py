"""The measured cost (engine/cost.py and ``maml-tui bench --cost``): the two byte counters against
hand-computed cases, the shapes the grid must show on a small model, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from engine.cost import SavedTensorBytes, measure_cell, peak_allocated_bytes, saved_tensor_bytes
from maml_tui.cli import app

runner = CliRunner()
SMALL = {"hidden": (16, 16), "meta_batch_size": 4, "time_it": False}


def test_saved_bytes_of_a_product_are_its_two_factors():
    a = torch.randn(1000, requires_grad=True)  # 4,000 bytes
    b = torch.randn(250, 4, requires_grad=True)  # 4,000 bytes
    c = torch.randn(300, requires_grad=True)  # 1,200 bytes
    with SavedTensorBytes() as counter:
        loss = (a * b.view(-1)).sum() + (c * c).sum()  # mul saves both factors; c is saved twice
        assert counter.live == 4000 + 4000 + 1200
        loss.backward()
    assert counter.peak == 9200 and counter.live == 0  # backward frees the graph, and the count with it
    assert counter.packs == 4


def test_a_view_shares_its_storage_and_counts_once():
    a = torch.randn(100, 10, requires_grad=True)
    with SavedTensorBytes() as counter:
        (a[:50] * a[50:]).sum()  # two views of one storage
    assert counter.peak == a.numel() * 4


def test_torch_func_refuses_the_hooks_and_is_reported_not_zero():
    """The reason the headline measure is the allocator's: torch.func will not run under the hooks."""
    w, x = torch.randn(4, 3), torch.randn(5, 4)
    saved, why = saved_tensor_bytes(lambda: torch.func.grad(lambda v: (x @ v).tanh().sum())(w))
    assert saved is None and "torch.func" in why


def test_peak_allocated_bytes_of_a_hand_case():
    peak, _ = peak_allocated_bytes(lambda: torch.ones(1000))
    assert peak == 4000
    peak, _ = peak_allocated_bytes(lambda: (torch.ones(1000) * 2).sum())  # two 4,000-byte tensors at once
    assert 8000 <= peak <= 8000 + 64
    # inside torch.func (jvp of grad, as engine.hessian.hvp): the transient graph is seen
    w, x = torch.randn(200, 100), torch.randn(300, 200)
    f = lambda v: (x @ v).tanh().pow(2).sum()  # noqa: E731
    with torch.no_grad():
        peak, _ = peak_allocated_bytes(lambda: torch.func.jvp(torch.func.grad(f), (w,), (torch.ones_like(w),)))
    assert peak > 2 * 300 * 100 * 4  # at least the activations and their tangents


@pytest.fixture(scope="module")
def cells():
    return {(a, s): measure_cell(a, s, **SMALL) for a in ("maml", "fomaml", "reptile", "imaml", "hfmaml")
            for s in (1, 5, 10, 20)}


def test_maml_memory_grows_linearly_with_inner_steps(cells):
    peaks = [cells["maml", s].peak_bytes for s in (1, 5, 10, 20)]
    assert peaks[0] < peaks[1] < peaks[2] < peaks[3]
    saved5, saved10 = cells["maml", 5].saved_bytes, cells["maml", 10].saved_bytes
    assert saved5 and abs(saved10 / saved5 - 2) < 0.15 * 2
    assert (peaks[3] - peaks[2]) == pytest.approx(2 * (peaks[2] - peaks[1]), rel=0.05)  # a constant per step


@pytest.mark.parametrize("algorithm", ["imaml", "fomaml", "reptile"])
def test_first_order_and_implicit_memory_is_flat(cells, algorithm):
    assert cells[algorithm, 20].peak_bytes <= 1.2 * cells[algorithm, 5].peak_bytes
    assert cells[algorithm, 20].peak_bytes < cells["maml", 20].peak_bytes / 2


def test_imaml_is_measured_through_its_hvps(cells):
    cell = cells["imaml", 10]
    assert cell.saved_bytes is None and cell.saved_note  # hooks cannot see it ...
    assert cell.peak_bytes > cells["reptile", 10].peak_bytes  # ... the allocator does: CG and HVPs on top of the loop


def test_hfmaml_keeps_every_inner_steps_parameters(cells):
    """Not flat: HF-MAML's backward sweep needs theta_s of every step, one per task (measured, so tested)."""
    params = 1 * 16 + 16 + 16 * 16 + 16 + 16 * 1 + 1  # the 1-16-16-1 MLP
    per_step = SMALL["meta_batch_size"] * params * 4
    growth = cells["hfmaml", 20].peak_bytes - cells["hfmaml", 10].peak_bytes
    assert growth == pytest.approx(10 * per_step, rel=0.05)
    assert cells["hfmaml", 20].saved_bytes == 0  # no autograd at all


def test_cli_cost_table_and_json(tmp_path):
    out = tmp_path / "x.json"
    result = runner.invoke(app, ["bench", "--cost", "--cost-steps", "1,2", "--cost-algorithms", "maml,imaml",
                                 "--seconds", "0.05", "--meta-batch", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "maml" in result.output and "imaml" in result.output and "2 steps" in result.output and "MiB" in result.output
    document = json.loads(out.read_text())
    assert document["torch"] == torch.__version__ and document["device"] == "cpu" and document["device_name"]
    assert document["protocol"]["task"] == "sinusoid" and document["protocol"]["meta_batch"] == 4
    got = {(c["algorithm"], c["inner_steps"]) for c in document["cells"]}
    assert got == {("maml", 1), ("maml", 2), ("imaml", 1), ("imaml", 2)}
    for cell in document["cells"]:
        assert cell["ms_per_meta_it"] > 0 and cell["repeats"] >= 3 and cell["peak_bytes"] > 0
        assert cell["cuda_peak_bytes"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cost-steps", "0"], "--cost-steps must be comma-separated whole numbers from 1 to 1,000"),
        (["--cost-steps", "1,x"], "--cost-steps must be comma-separated"),
        (["--cost-steps", "1001"], "--cost-steps must be comma-separated"),
        (["--cost-steps", ""], "--cost-steps must be comma-separated"),
        (["--cost-algorithms", "maml,nonesuch"], "'nonesuch' is not one"),
        (["--cost-algorithms", "protonet"], "'protonet' is not one"),
    ],
)
def test_cli_cost_bad_flags_one_sentence(args, message):
    result = runner.invoke(app, ["bench", "--cost", *args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") or result.output.lower().startswith("error:")
    assert message.lower() in result.output.lower()
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_cli_cost_flags_need_cost():
    result = runner.invoke(app, ["bench", "--cost-steps", "1"])
    assert result.exit_code == 1 and "go with --cost" in result.output and result.output.count("\n") == 1
