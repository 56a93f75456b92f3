"""ExplorerSession, the steppable object behind the explorer, and the engine loop that serves it."""

from __future__ import annotations

import gc
import json
import math
import queue
import threading

import pytest
import torch

from engine.errors import ConfigError

from engine.config import RunConfig
from engine.explorer import CURVE_STEPS, ExplorerSession, apply_settings, catalog, companion_config
from engine.registry import regression_algorithms
from engine.registry import TASKS as TASK_NAMES
from engine.explorer_server import serve
from engine.trainer import DivergedError, MetaLearner
from maml_tui.engine_link import SHIPPED_RUN

ALGORITHM_NAMES = regression_algorithms()  # the explorer draws regression: protonet classifies only


def small_config(**algo) -> RunConfig:
    return RunConfig().replace(model={"hidden": (16, 16)}, train={"meta_batch_size": 4}, algo=algo or {})


@pytest.fixture(scope="module")
def shipped() -> ExplorerSession:
    return ExplorerSession.open(SHIPPED_RUN, device="cpu")


def test_the_shipped_checkpoint_adapts_well_in_a_few_inner_steps(shipped):
    shipped.reset_adaptation()
    before = shipped.snapshot()
    for _ in range(3):
        shipped.inner_step()
    after = shipped.snapshot()
    assert before.step == after.step == 70_000
    assert after.inner_steps_taken == 3 and len(after.predictions) == 4
    assert after.support_loss[-1] < 0.5 * before.support_loss[0]
    assert after.query_loss[-1] < 0.1 * before.query_loss[0]  # meta-trained: a few steps fit well
    assert after.predictions[-1] != before.predictions[0]
    shipped.reset_adaptation()
    assert shipped.snapshot().predictions == before.predictions


def test_snapshots_hold_plain_numbers_only(shipped):
    def plain(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (bool, int, float, str))

    assert plain(shipped.snapshot().to_dict())


def test_an_inner_step_lowers_the_support_loss_of_a_fresh_model():
    session = ExplorerSession.open(config=small_config(inner_lr=0.05), device="cpu")
    losses = []
    for _ in range(3):
        session.inner_step()
        losses = session.snapshot().support_loss
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_outer_steps_advance_and_record():
    session = ExplorerSession.open(config=small_config(), device="cpu")
    records = session.outer_steps(5)
    assert session.learner.step == 5 and [r.step for r in records] == [5]
    assert session.snapshot().step == 5
    assert math.isfinite(records[0].query_loss_after) and records[0].meta_grad_norm > 0


def test_a_snapshot_between_two_drawn_curves_reuses_the_curve_and_nothing_else():
    """While training, most snapshots adapt only the steps taken and carry the last full snapshot's
    loss-per-inner-step curve; everything else is computed afresh, and a new task, a companion
    or more steps than the remembered curve holds make it adapt the whole curve again."""
    session = ExplorerSession.open(config=small_config(inner_lr=0.05), device="cpu")
    session.inner_step()
    full = session.snapshot().to_dict()
    assert session.snapshot(full_curve=False).to_dict() == full  # same theta: the same snapshot
    session.outer_steps(3)
    fresh, cheap = session.snapshot().to_dict(), None
    session._curve = (session._curve[0], tuple(full["curve"]))  # what the last full snapshot remembered
    cheap = session.snapshot(full_curve=False).to_dict()
    assert cheap["curve"] == full["curve"] != fresh["curve"]  # the remembered curve, not a new one
    assert {k: v for k, v in cheap.items() if k != "curve"} == {k: v for k, v in fresh.items() if k != "curve"}
    assert len(cheap["curve"]) == CURVE_STEPS + 1
    session.new_task()
    assert session.snapshot(full_curve=False).to_dict() == session.snapshot().to_dict()  # another task: adapted in full
    for _ in range(CURVE_STEPS + 1):
        session.inner_step()
    longer = session.snapshot(full_curve=False)
    assert len(longer.curve) == CURVE_STEPS + 2 and longer.curve == session.snapshot().curve


def test_new_task_changes_the_task_and_resets_the_adaptation():
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.inner_step()
    first = session.snapshot()
    session.new_task()
    second = session.snapshot()
    assert second.task_number == first.task_number + 1
    assert second.task_params != first.task_params and second.support_x != first.support_x
    assert second.inner_steps_taken == 0


def test_compare_and_baseline_adapt_on_the_same_task():
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.set_companion("compare", "fomaml")
    session.set_companion("baseline", "pretrain")
    session.outer_steps(3)
    session.inner_step()
    snapshot = session.snapshot()
    roles = {c.role: c for c in snapshot.companions}
    assert roles["compare"].algorithm == "fomaml" and roles["baseline"].algorithm == "pretrain"
    assert roles["compare"].step == roles["baseline"].step == 3
    assert len(roles["compare"].curve) == len(snapshot.curve)
    assert len(roles["compare"].prediction) == len(snapshot.grid_x)
    session.set_companion("compare", None)
    assert [c.role for c in session.snapshot().companions] == ["baseline"]


def test_settings_keep_training_unless_the_model_or_algorithm_changes():
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.outer_steps(2)
    session.set_settings({"shots": "5", "inner_lr": "0.03", "inner_steps": "2", "task": "linear"})
    assert session.learner.step == 2 and session.config.train.shots == 5
    assert session.config.algo.inner_lr == 0.03 and session.config.task.name == "linear"
    assert len(session.snapshot().support_x) == 5
    assert session.needs_fresh_model({"algorithm": "reptile"}) and not session.needs_fresh_model({"shots": 3})
    session.set_settings({"algorithm": "metasgd"})
    assert session.learner.step == 0 and session.config.algo.name == "metasgd"
    assert session.config.algo.inner_lr == 0.001  # a new algorithm starts from its own defaults
    with pytest.raises(ValueError):
        apply_settings(session.config, {"shots": "0"})
    session.set_settings({"algorithm": "cavia"})
    assert session.config.algo.inner_lr == 1.0 and session.settings["inner_lr"] == 1.0
    session.set_settings({"algorithm": "mamlpp"})
    assert session.config.algo.inner_steps == 5
    assert session.needs_fresh_model({"inner_steps": 3})  # one learned rate per step
    assert "inner_steps" in session.snapshot().fresh_settings


def test_companions_keep_their_own_inner_rate_when_their_defaults_differ():
    config = small_config(inner_lr=0.02).resolved()
    assert companion_config(config, "fomaml").algo.inner_lr == 0.02  # same default as maml: shared
    assert companion_config(config, "cavia").algo.inner_lr == 1.0
    assert companion_config(config, "pretrain").algo.inner_lr == 0.01
    assert companion_config(config, "mamlpp").algo.inner_steps == 5


def test_every_algorithm_and_task_family_can_be_explored(tmp_path, monkeypatch):
    from engine import omniglot

    omniglot.make_synthetic(tmp_path / "omniglot", alphabets=4, characters_per_alphabet=4, drawings=12)
    monkeypatch.setenv("MAML_TUI_DATA_DIR", str(tmp_path))  # where the omniglot family looks by default
    session = ExplorerSession.open(config=small_config(), device="cpu")
    views = {}
    for algorithm in ALGORITHM_NAMES:
        session.set_settings({"algorithm": algorithm})
        session.outer_steps(1)
        session.inner_step()
        snapshot = session.snapshot()
        assert math.isfinite(snapshot.query_loss[-1]), algorithm
        views[algorithm] = [section["title"] for section in snapshot.algorithm_view]
    assert "learned inner rate (LSLR): per parameter, at inner step 1..S" in views["mamlpp"]
    assert "context of this task after inner step 0..S" in views["cavia"]
    assert "rates adapted by hypergradient descent" in views["alphamaml"]
    assert views["r2d2"] == ["learned ridge head"] and views["maml"] == []
    for task in TASK_NAMES:
        session.set_settings({"task": task})
        assert math.isfinite(session.snapshot().curve[-1]), task


def test_a_diverging_run_restores_its_last_finite_state():
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.outer_steps(2)
    good = {n: v.clone() for n, v in session.learner.parameters().items()}
    session.set_settings({"inner_lr": 1000.0})
    with pytest.raises(DivergedError, match="diverged"):
        session.outer_steps(20)
    assert session.learner.step == 2
    assert all(torch.equal(good[n], v) for n, v in session.learner.parameters().items())


def test_save_and_load_round_trip_through_a_run_directory(tmp_path):
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.outer_steps(3)
    run = tmp_path / "run"
    session.save(run)
    learner = MetaLearner.from_run(run, "cpu")
    assert learner.step == 3
    assert all(torch.equal(learner.parameters()[n], v) for n, v in session.learner.parameters().items())
    session.outer_steps(2)
    session.save(run)  # saving again overwrites the checkpoint in place
    assert MetaLearner.from_run(run, "cpu").step == 5
    other = ExplorerSession.open(run, device="cpu")
    assert other.learner.step == 5 and [r.step for r in other.records] == [3, 5]
    other.load(run, role="baseline")
    assert other.companions["baseline"].step == 5


def test_saving_into_a_headless_run_keeps_its_metrics(tmp_path):
    from engine.checkpoint import RunDirectory
    from engine.trainer import train

    run = tmp_path / "run"
    config = small_config().replace(train={"steps": 40, "log_every": 10})
    train(config, run, device="cpu")
    before = RunDirectory(run).read_metrics()
    session = ExplorerSession.open(run, device="cpu")
    session.outer_steps(2)
    session.save(run)
    after = RunDirectory(run).read_metrics()
    assert after[: len(before)] == before  # the headless records, untouched and complete
    assert [r["step"] for r in after[len(before):]] == [42]
    assert MetaLearner.from_run(run, "cpu").step == 42


def test_saving_another_model_into_a_run_replaces_its_history(tmp_path):
    from engine.checkpoint import RunDirectory
    from engine.trainer import train

    run = tmp_path / "run"
    train(small_config().replace(train={"steps": 40, "log_every": 10}), run, device="cpu")
    session = ExplorerSession.open(config=small_config(), device="cpu")  # a new model, not that run
    session.outer_steps(3)
    session.save(run)
    assert [r["step"] for r in RunDirectory(run).read_metrics()] == [r.step for r in session.records]
    assert MetaLearner.from_run(run, "cpu").step == 3


def test_the_engine_loop_answers_commands_with_events():
    commands, events = queue.Queue(), queue.Queue()
    worker = threading.Thread(target=serve, args=(commands, events), kwargs={"run": str(SHIPPED_RUN), "device": "cpu"}, daemon=True)
    worker.start()

    def wait_for(kind):
        while True:
            event = events.get(timeout=30)
            if event["kind"] == kind:
                return event

    assert wait_for("ready")["device"] == "cpu"
    assert wait_for("snapshot")["snapshot"]["step"] == 70_000
    commands.put(("outer_steps", {"count": 3}))
    while (snapshot := wait_for("snapshot"))["snapshot"]["step"] < 70_003:
        pass
    assert gc.get_freeze_count() > 10_000  # torch and the engine left out of full collections
    gc.unfreeze()  # (in this test the engine shares the test process)
    commands.put(("set_settings", {"changes": {"shots": "0"}}))
    assert "shots" in wait_for("error")["message"]
    commands.put(("quit", {}))
    wait_for("closed")
    worker.join(5)
    assert not worker.is_alive()


def test_a_change_that_reshapes_a_companion_starts_that_companion_afresh():
    """Found in review: reptile compared with mamlpp, then 3 inner steps, failed half-applied."""
    session = ExplorerSession.open(config=apply_settings(small_config(), {"algorithm": "reptile"}), device="cpu")
    session.set_companion("compare", "mamlpp")
    session.outer_steps(2)
    session.set_settings({"inner_steps": 3})
    assert session.config.algo.inner_steps == 3 and session.learner.step == 2
    companion = session.companions["compare"]
    assert companion.step == 0 and companion.params["lslr.layer0.weight"].shape == (3,)


def test_the_autosave_keeps_the_model_and_where_it_came_from(tmp_path):
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.outer_steps(7)
    assert session.unsaved_steps == 7 and session.snapshot().unsaved_steps == 7
    session.autosave(tmp_path / "autosave")
    assert session.source == "new model" and session.unsaved_steps == 7  # an autosave is not a save
    restored = ExplorerSession.restore(tmp_path / "autosave", device="cpu")
    assert restored.learner.step == 7 and restored.source == "new model" and restored.unsaved_steps == 7
    for name, value in session.learner.parameters().items():
        assert torch.equal(value, restored.learner.parameters()[name])
    assert [r.step for r in restored.records] == [r.step for r in session.records]
    session.save(tmp_path / "mine")
    assert session.unsaved_steps == 0 and (tmp_path / "mine" / "preview.json").is_file()
    session.outer_steps(2)
    assert session.unsaved_steps == 2


@pytest.mark.parametrize("algorithm", ALGORITHM_NAMES)
def test_the_meta_batch_view_shows_the_last_outer_steps_tasks_adapted_one_by_one(algorithm):
    config = small_config(name=algorithm)
    session = ExplorerSession.open(config=config, device="cpu")
    source, tasks = session.batch_view(3)
    assert source == "next" and len(tasks) == 3
    twin = MetaLearner(config, "cpu")  # the same seed draws the same meta-batches
    session.outer_steps(1)
    expected = twin.sample_batch()
    source, tasks = session.batch_view(9)
    assert source == "last" and len(tasks) == 4  # never more than the meta-batch holds
    learner = session.learner
    for t, task in enumerate(tasks):
        assert task.task_params == {k: float(v[t]) for k, v in expected.params.items()}
        assert task.support_x == tuple(float(v) for v in expected.x_support[t].reshape(-1))
        # an independent answer: this task alone, adapted by the algorithm from the current theta
        alone = learner.algorithm.adapt(learner.parameters(), expected.x_support[t], expected.y_support[t],
                                        config.algo.inner_steps, expected.x_query[t], expected.y_query[t])
        assert math.isclose(task.loss_before, float(alone.query_loss[0].mean()), rel_tol=1e-5, abs_tol=1e-7)
        assert math.isclose(task.loss_after, float(alone.query_loss[-1].mean()), rel_tol=1e-5, abs_tol=1e-7)
        assert len(task.before) == len(task.after) == len(task.truth) == len(session.snapshot().grid_x)


def test_watching_the_meta_batch_does_not_change_training():
    watched, plain = (ExplorerSession.open(config=small_config(), device="cpu") for _ in range(2))
    watched.batch_count = 4
    for _ in range(5):
        watched.outer_steps(1)
        assert len(watched.snapshot().batch_tasks) == 4
        plain.outer_steps(1)
    assert plain.snapshot().batch_tasks == ()
    for name, value in watched.learner.params.items():
        assert torch.equal(value, plain.learner.params[name]), name


# -- classification episodes ----------------------------------------------------------------------
def digits_session(**algo) -> ExplorerSession:
    session = ExplorerSession.open(config=small_config(**algo), device="cpu")
    session.set_settings({"task": "digits"})
    return session


def test_switching_to_digits_starts_a_model_that_an_inner_step_visibly_moves():
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.outer_steps(2)
    assert session.needs_fresh_model({"task": "digits"})  # 64 inputs and 5 logits: another network
    session.set_settings({"task": "digits"})
    config = session.config
    assert (config.train.shots, config.algo.inner_lr, config.model.hidden) == (1, 0.4, (16, 16))
    assert session.learner.step == 0 and session.learner.family.ways == 5
    session.set_settings({"algorithm": "fomaml"})  # a new algorithm on digits keeps digits' rate, not its own 0.001
    assert session.config.algo.inner_lr == 0.4
    session.set_settings({"algorithm": "protonet"})  # classification-only: fine here
    assert session.snapshot().classification is not None
    session.set_settings({"task": "sinusoid"})  # back on curves: the regression defaults, and an algorithm that regresses
    assert (session.config.train.shots, session.config.algo.name, session.config.algo.inner_lr) == (10, "maml", 0.001)
    assert session.snapshot().classification is None and len(session.snapshot().grid_x) > 0
    explicit = apply_settings(session.config, {"task": "digits", "shots": 5, "inner_lr": 0.1})
    assert (explicit.train.shots, explicit.algo.inner_lr) == (5, 0.1)  # what a change names wins


def test_a_classification_snapshot_holds_the_episode_images_probabilities_and_accuracy():
    session = digits_session()
    family, task = session.learner.family, session.task
    ways, shots = family.ways, session.config.train.shots
    first = session.snapshot()
    view = first.classification
    assert view["ways"] == ways and view["shots"] == shots
    assert len(view["support"]) == ways * shots
    for item, image, label in zip(view["support"], task.x_support[0], task.y_support[0].tolist()):
        assert item["label"] == label and len(item["pixels"]) == 8 and all(len(row) == 8 for row in item["pixels"])
        assert torch.allclose(torch.tensor(item["pixels"]), image[0], atol=1e-3)  # the image itself, rounded
    assert view["classes"] == task.params["classes"][0].tolist()
    assert view["class_names"] == [family.class_name(c) for c in view["classes"]]
    labels = [q["label"] for q in view["query"]]
    assert len(labels) == 2 * ways and all(labels.count(c) == 2 for c in range(ways))
    assert labels[:ways] == list(range(ways))  # one of every class first
    for q in view["query"]:
        assert torch.allclose(torch.tensor(q["pixels"]), task.x_query[0, q["index"], 0], atol=1e-3)
        assert task.y_query[0, q["index"]] == q["label"]
    assert first.grid_x == first.truth == first.support_x == () and first.task_params == {}

    session.inner_step()
    session.inner_step()
    snapshot = session.snapshot()
    view = snapshot.classification
    assert len(view["probabilities"]) == 3 and len(view["accuracy"]) == 3 == len(snapshot.query_loss)
    for step in view["probabilities"]:
        assert len(step) == 2 * ways
        assert all(len(p) == ways and math.isclose(sum(p), 1.0, abs_tol=1e-5) and min(p) >= 0 for p in step)
    assert view["probabilities"][0] == first.classification["probabilities"][0]  # theta's, whatever was taken
    assert view["probabilities"][2] != view["probabilities"][0]  # the inner steps moved them
    # the engine's own evaluation of the same adaptation: its accuracy metric, and argmax by hand
    learner = session.learner
    history = learner.algorithm.adapt(learner.parameters(), task.x_support, task.y_support, CURVE_STEPS, task.x_query, task.y_query)
    assert view["accuracy_curve"] == [float(m["accuracy"].mean()) for m in history.query_metrics]
    assert view["accuracy"] == view["accuracy_curve"][:3] and len(view["accuracy_curve"]) == CURVE_STEPS + 1
    for s in range(3):
        logits = learner.model.forward(history.params[s], task.x_query)[0]
        assert math.isclose(view["accuracy"][s], float((logits.argmax(-1) == task.y_query[0]).float().mean()), abs_tol=1e-6)
        shown = torch.softmax(logits[[q["index"] for q in view["query"]]], -1)
        assert torch.allclose(torch.tensor(view["probabilities"][s]), shown, atol=1e-6)
    assert all(math.isfinite(v) for v in snapshot.curve)  # the cross-entropy per inner step
    json.dumps(snapshot.to_dict(), allow_nan=False)  # plain data, across the process boundary

    session.reset_adaptation()
    assert session.snapshot().classification["probabilities"] == first.classification["probabilities"]
    session.new_task()
    assert session.snapshot().classification["support"] != view["support"]


def test_ways_is_a_classification_setting_that_starts_a_new_model():
    session = digits_session()
    assert session.settings["ways"] == 5 and "ways" in session.fresh_settings
    session.outer_steps(1)
    assert session.needs_fresh_model({"ways": 3}) and not session.needs_fresh_model({"ways": 5})
    session.set_settings({"ways": 3})
    assert session.learner.family.ways == 3 and session.learner.step == 0
    view = session.snapshot().classification
    assert view["ways"] == 3 and len(view["support"]) == 3 and view["max_ways"] == 8  # digits' val and test splits: 8 classes
    assert session.learner.params["layer2.weight"].shape[-1] == 3  # a 3-logit head
    with pytest.raises(ConfigError, match="at most 8"):
        session.set_settings({"ways": 10})
    assert session.learner.family.ways == 3  # a refused setting changes nothing
    session.set_settings({"task": "sinusoid"})
    assert "ways" not in session.settings
    with pytest.raises(ValueError, match="family is regression"):
        session.set_settings({"ways": 3})


def test_unseen_classes_draw_episodes_from_the_meta_test_split_and_leave_training_alone():
    from engine.classification import DIGITS_TEST, DIGITS_TRAIN, ROTATIONS

    session = digits_session()
    train_classes = {d * len(ROTATIONS) + r for d in DIGITS_TRAIN for r in range(len(ROTATIONS))}
    test_classes = {d * len(ROTATIONS) + r for d in DIGITS_TEST for r in range(len(ROTATIONS))}
    assert set(session.snapshot().classification["classes"]) <= train_classes
    params = {n: v.detach().clone() for n, v in session.learner.params.items()}
    number = session.task_number
    session.set_episode_split("test")
    view = session.snapshot().classification
    assert view["split"] == "test" and session.task_number == number + 1
    for _ in range(5):
        assert set(session.snapshot().classification["classes"]) <= test_classes
        session.new_task()
    assert session.learner.family.split == "train"  # training still draws its meta-batches from the train classes
    session.outer_steps(2)
    assert all(not torch.equal(params[n], v) for n, v in session.learner.params.items() if v.dtype.is_floating_point)
    assert set(session.snapshot().classification["classes"]) <= test_classes
    session.set_episode_split("train")
    assert set(session.snapshot().classification["classes"]) <= train_classes
    with pytest.raises(ValueError, match="train or test"):
        session.set_episode_split("val")
    session.set_settings({"task": "sinusoid"})
    with pytest.raises(ValueError, match="classification family"):
        session.set_episode_split("test")


def test_companions_on_an_episode_report_their_accuracy_after_the_same_steps():
    session = digits_session()
    session.set_companion("compare", "fomaml")
    session.set_companion("baseline", "pretrain")
    session.outer_steps(2)
    session.inner_step()
    snapshot = session.snapshot()
    task = session.task
    for companion in snapshot.companions:
        learner = session.companions[companion.role]
        history = learner.algorithm.adapt(learner.parameters(), task.x_support, task.y_support, CURVE_STEPS,
                                          task.x_query, task.y_query)
        assert list(companion.accuracy) == [float(m["accuracy"].mean()) for m in history.query_metrics]
    baseline = next(c for c in snapshot.companions if c.role == "baseline")
    assert baseline.accuracy[0] == pytest.approx(1 / 5)  # pretrain's new head starts at zero: every label alike


def test_the_catalog_lists_classification_and_says_what_is_what():
    entries = catalog()
    kinds = {t["name"]: t["kind"] for t in entries["tasks"]}
    assert list(kinds) == list(TASK_NAMES) and kinds["digits"] == kinds["omniglot"] == "classification"
    assert kinds["sinusoid"] == "regression"
    algorithms = {a["name"]: a["kind"] for a in entries["algorithms"]}
    assert algorithms["protonet"] == "classification" and algorithms["maml"] == ""


def test_omniglot_images_are_sent_pooled_to_14_pixels(tmp_path, monkeypatch):
    from engine import omniglot

    omniglot.make_synthetic(tmp_path / "omniglot", alphabets=4, characters_per_alphabet=4, drawings=12)
    monkeypatch.setenv("MAML_TUI_DATA_DIR", str(tmp_path))
    session = ExplorerSession.open(config=small_config(), device="cpu")
    session.set_settings({"task": "omniglot"})
    view = session.snapshot().classification
    image = view["support"][0]["pixels"]
    assert len(image) == 14 and len(image[0]) == 14
    pooled = torch.nn.functional.avg_pool2d(session.task.x_support[0, 0], 2)[0]
    assert torch.allclose(torch.tensor(image), pooled, atol=1e-3)


# -- the meta-gradient panel and the sharpness indicator (issue 10) -------------------------------
def test_the_meta_gradient_panel_compares_every_estimate_with_the_exact_one_on_the_same_batch():
    from engine import make_algorithm

    session = ExplorerSession.open(config=small_config(inner_lr=0.01), device="cpu")
    view = session.gradient_view()
    assert view["batch_source"] == "next" and view["step"] == 0
    session.outer_steps(2)
    view = session.gradient_view()
    assert view["batch_source"] == "last" and view["step"] == 2 and view["tasks"] == 4
    rows = {r["algorithm"]: r for r in view["rows"]}
    assert list(rows) == ["maml", "fomaml", "reptile", "imaml", "hfmaml"]
    assert all(r["reason"] == "" for r in rows.values()), rows
    exact = rows["maml"]
    assert math.isclose(exact["cosine"], 1.0, rel_tol=1e-9) and exact["norm_ratio"] == 1.0
    # an independent answer: fomaml's meta-gradient straight from the algorithm, on the same batch
    learner, batch = session.learner, session.last_batch
    params = learner.parameters()

    def flat(name):
        algorithm = make_algorithm(name, learner.model, inner_lr=0.01, inner_steps=1, loss=learner.family.loss)
        grads = algorithm.meta_gradient(params, batch)[1]
        return torch.cat([grads[n].reshape(-1).double() for n in params])

    g, reference = flat("fomaml"), flat("maml")
    cosine = float(g @ reference / (g.norm() * reference.norm()))
    assert math.isclose(rows["fomaml"]["cosine"], cosine, rel_tol=1e-6, abs_tol=1e-7)
    assert math.isclose(rows["fomaml"]["norm_ratio"], float(g.norm() / reference.norm()), rel_tol=1e-6)
    assert math.isclose(exact["norm"], float(reference.norm()), rel_tol=1e-6)
    for row in rows.values():
        assert row["seconds"] > 0 and -1 - 1e-9 <= row["cosine"] <= 1 + 1e-9
    # memory, on bench --cost's ruler: the second-order graph holds more than the first-order step,
    # and every row is measured (torch.func's graphs inside iMAML's products included)
    assert exact["peak_bytes"] > rows["fomaml"]["peak_bytes"] > 0
    assert all(r["peak_bytes"] > 0 for r in rows.values()), rows
    # looking does not train
    assert session.learner.step == 2 and all(torch.equal(v, params[n]) for n, v in session.learner.parameters().items())


def test_the_sharpness_is_the_hessians_top_eigenvalue_of_the_current_tasks_support_loss(shipped):
    from engine.hessian import sharpness

    shipped.reset_adaptation()
    shipped.inner_step()
    view = shipped.sharpness_view()
    learner, task = shipped.learner, shipped.task
    names = learner.algorithm.adapt_names()
    expected = sharpness(learner.model, learner.family.loss, learner.parameters(), task.x_support, task.y_support,
                         names, 20, torch.Generator().manual_seed(0))
    assert view["reason"] == "" and view["iterations"] == 20 and view["inner_steps_taken"] == 1
    assert math.isclose(view["at_theta"], float(expected[0]), rel_tol=1e-5)
    adapted = learner.algorithm.adapt(learner.parameters(), task.x_support, task.y_support, 1).params[1]
    expected = sharpness(learner.model, learner.family.loss, adapted, task.x_support, task.y_support,
                         names, 20, torch.Generator().manual_seed(0))
    assert math.isclose(view["at_adapted"], float(expected[0]), rel_tol=1e-5)
    assert view["inner_lr"] == 0.001 and view["at_theta"] > 0
    shipped.reset_adaptation()
    assert math.isnan(shipped.sharpness_view()["at_adapted"])


def test_the_sharpness_works_through_the_conv_net_of_a_classification_run():
    session = digits_session()
    view = session.sharpness_view()
    assert view["reason"] == "" and math.isfinite(view["at_theta"]), view
    rows = {r["algorithm"]: r for r in session.gradient_view()["rows"]}
    assert math.isclose(rows["maml"]["cosine"], 1.0, rel_tol=1e-6)
    assert all(r["reason"] or math.isfinite(r["cosine"]) for r in rows.values())


def test_the_engine_computes_the_meta_gradients_only_while_their_panel_is_open():
    from engine.explorer_server import Server

    commands, events = queue.Queue(), queue.Queue()
    server = Server(commands, events, None, "cpu", 4.0, None)
    server.session = ExplorerSession.open(config=small_config(), device="cpu")
    drained = lambda: [e["kind"] for e in iter(lambda: events.get_nowait() if not events.empty() else None, None)]  # noqa: E731
    for _ in range(3):
        server.handle(("outer_steps", {"count": 2}))
        while server.steps_left:
            server.train_chunk()
        server.send_snapshot()
        server.send_views(idle=True)
    kinds = drained()
    assert "gradients" not in kinds and server.computed["gradients"] == 0
    assert kinds.count("sharpness") == 3  # theta changed three times: the indicator follows it
    server.send_views(idle=True)
    assert "sharpness" not in drained()  # nothing changed, nothing computed
    server.handle(("gradient_view", {"open": True}))
    server.send_views(idle=True)
    opened = [e for e in iter(lambda: events.get_nowait() if not events.empty() else None, None) if e["kind"] == "gradients"]
    assert len(opened) == 1 and opened[0]["view"]["step"] == 6 and server.computed["gradients"] == 1
    server.send_views(idle=True)
    assert server.computed["gradients"] == 1  # the same theta and meta-batch: not again
    server.handle(("gradient_view", {"open": False}))
    server.handle(("outer_steps", {"count": 2}))
    while server.steps_left:
        server.train_chunk()
    server.send_views(idle=True)
    assert server.computed["gradients"] == 1
