"""The outer loop: metrics, exact resume, atomic safe checkpoints and divergence handling."""

from __future__ import annotations

import json

import pytest
import torch

import engine
from engine.registry import regression_algorithms
from engine.checkpoint import RunDirectory, RunError, load_checkpoint
from engine.config import RunConfig
from engine.trainer import DivergedError, MetaLearner, train


def small_config(**train) -> RunConfig:
    base = {"steps": 200, "meta_batch_size": 5, "shots": 5, "query": 5, "log_every": 20, "checkpoint_every": 50}
    return RunConfig().replace(model={"hidden": (16, 16)}, train={**base, **train})


@pytest.mark.parametrize("algo", sorted(regression_algorithms()))
def test_outer_step_reports_every_metric(algo):
    config = small_config().replace(algo={"name": algo, "inner_steps": 2})
    learner = MetaLearner(config, "cpu")
    before = {n: v.detach().clone() for n, v in learner.params.items()}
    metrics = learner.outer_step()
    assert metrics.step == learner.step == 1
    assert metrics.finite and metrics.support_loss > 0 and metrics.query_loss_before > 0
    inner_steps = 0 if algo == "r2d2" else 2  # R2-D2 solves its head: no inner gradient steps
    assert len(metrics.inner_grad_norms) == inner_steps and all(g > 0 for g in metrics.inner_grad_norms)
    changed = any(not torch.equal(before[n], v) for n, v in learner.params.items())
    if algo == "scratch":
        assert not changed and metrics.meta_grad_norm == 0
    else:
        assert changed and metrics.meta_grad_norm > 0
        body = {"layer0", "layer1"} | ({"r2d2"} if algo == "r2d2" else {"layer2"})  # R2-D2's head is solved, not learned
        assert set(metrics.layer_grad_norms) >= body
        total = sum(v ** 2 for v in metrics.layer_grad_norms.values()) ** 0.5
        assert metrics.meta_grad_norm == pytest.approx(total, rel=1e-5)
    if algo == "metasgd":
        assert set(metrics.learned) == {"lr.layer0.weight", "lr.layer1.weight", "lr.layer2.weight"}
    if algo in ("maml", "fomaml", "anil", "metasgd"):
        assert metrics.query_loss_after < metrics.query_loss_before  # one inner step helps at init


def test_meta_training_improves_adaptation():
    learner = MetaLearner(small_config(meta_batch_size=10, shots=10, query=10).replace(algo={"inner_lr": 0.01}), "cpu")
    first = [learner.outer_step() for _ in range(10)]
    for _ in range(600):
        learner.outer_step(metrics=False)
    last = [learner.outer_step() for _ in range(10)]
    mean = lambda records: sum(m.query_loss_after for m in records) / len(records)
    assert mean(last) < 0.6 * mean(first)


@pytest.mark.parametrize("split_at", [100, 150])  # 150 is not a multiple of log_every: logging must not matter
def test_resume_is_bit_identical(tmp_path, split_at):
    config = small_config(steps=200)
    train(config, tmp_path / "straight", device="cpu")
    train(config, tmp_path / "split", device="cpu", steps=split_at)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] == split_at
    train(config, tmp_path / "split", device="cpu", resume=True, steps=200)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert straight["step"] == split["step"] == 200
    for name, value in straight["params"].items():
        assert torch.equal(value, split["params"][name]), name
    assert torch.equal(straight["rng"]["tasks"], split["rng"]["tasks"])
    steps = [r["step"] for r in RunDirectory(tmp_path / "split").read_metrics()]
    expected = sorted(set(range(20, 201, 20)) | {split_at})  # the last step of a run is always logged
    assert steps == expected  # no duplicate or missing records across the resume
    assert RunDirectory(tmp_path / "split").load_config().train.steps == 200  # the new target is kept


@pytest.mark.parametrize("algo", ["alphamaml", "mamlpp", "cavia"])
def test_resume_is_bit_identical_for_algorithms_with_state_of_their_own(tmp_path, algo):
    """Alpha-MAML's beta and last direction, MAML++'s schedules and rate group, CAVIA's context model.
    The split run is stopped at step 25 of the same 60-step target (MAML++'s schedules follow the
    target, so a run trained to 25 and then extended to 60 is a different run by design)."""
    config = small_config(steps=60).replace(algo={"name": algo, "inner_steps": 2})
    train(config, tmp_path / "straight", device="cpu")
    done = []
    end = train(config, tmp_path / "split", device="cpu", on_event=lambda event: done.append(event.step),
                should_stop=lambda: bool(done) and done[-1] >= 25)
    assert end.message == "interrupted" and 25 <= end.step < 60
    train(config, tmp_path / "split", device="cpu", resume=True)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for name, value in straight["params"].items():
        assert torch.equal(value, split["params"][name]), name
    assert set(straight["buffers"]) == set(split["buffers"])
    for name, value in straight["buffers"].items():
        assert torch.equal(value, split["buffers"][name]), name
    if algo == "alphamaml":
        assert "alphamaml.beta" in straight["buffers"]


def test_run_directory_layout_and_weights_only_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(small_config(steps=60), run, device="cpu")
    document = json.loads((run / "config.json").read_text())
    assert document["format"] == "maml-tui-run" and RunConfig.from_dict(document["config"]) == small_config(steps=60).resolved()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert {"query_loss_before", "query_loss_after", "meta_grad_norm", "layer_grad_norms", "inner_grad_norms"} <= set(records[0])
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 60 and set(state["params"]) == set(engine.MLP(hidden=(16, 16)).names)
    assert "state" in state["optimizer"] and state["rng"]["tasks"].dtype == torch.uint8
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    restored = MetaLearner.from_run(run, "cpu")
    assert restored.step == 60 and torch.equal(restored.params["layer0.weight"].detach(), state["params"]["layer0.weight"])


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(tmp_path):
    run = tmp_path / "run"
    train(small_config(steps=20), run, device="cpu")
    good = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(RunError, match="not a readable checkpoint"):
        MetaLearner.from_run(run, "cpu")
    torch.save({"anything": torch.zeros(1)}, run / "checkpoint.pt")
    with pytest.raises(RunError, match="not a maml-tui checkpoint"):
        MetaLearner.from_run(run, "cpu")
    (run / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="corrupt"):
        MetaLearner.from_run(run, "cpu")
    with pytest.raises(RunError, match="not a run directory"):
        MetaLearner.from_run(tmp_path / "missing", "cpu")


def test_pickled_objects_are_never_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "maml-tui-checkpoint", "payload": Evil()}, path)
    with pytest.raises(RunError):
        load_checkpoint(path)


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    train(small_config(steps=40), run, device="cpu")
    good = load_checkpoint(run / "checkpoint.pt")
    with pytest.raises(DivergedError, match="last good checkpoint"):
        # an absurd inner rate makes the adapted parameters, then the loss, blow up
        config = RunDirectory(run).load_config().replace(algo={"inner_lr": 1e6}, train={"log_every": 1})
        (run / "config.json").write_text(json.dumps({"format": "maml-tui-run", "version": 1, "config": config.to_dict()}))
        train(config, run, device="cpu", resume=True, steps=400)
    kept = load_checkpoint(run / "checkpoint.pt")
    assert kept["step"] == good["step"]
    for name, value in good["params"].items():
        assert torch.equal(kept["params"][name], value)


def test_refuses_to_overwrite_an_existing_run(tmp_path):
    train(small_config(steps=20), tmp_path / "run", device="cpu")
    with pytest.raises(RunError, match="already holds a run"):
        train(small_config(steps=20), tmp_path / "run", device="cpu")


def test_stop_request_saves_and_reports_interrupted(tmp_path):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 30

    end = train(small_config(steps=1000), tmp_path / "run", device="cpu", should_stop=stop)
    assert end.message == "interrupted" and end.step == 30
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 30


def test_config_validation_names_the_flag():
    with pytest.raises(ValueError, match="--meta-batch must be positive"):
        small_config(meta_batch_size=0).validate()
    with pytest.raises(ValueError, match="--inner-lr must be positive"):
        small_config().replace(algo={"inner_lr": -1.0}).validate()
    with pytest.raises(ValueError, match="unknown algorithm"):
        small_config().replace(algo={"name": "nonesuch"}).validate()
    assert RunConfig.from_dict(small_config().to_dict()) == small_config()


def test_device_resolution():
    from engine.trainer import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
