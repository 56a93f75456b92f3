"""Few-shot classification: the digits episodes, the conv net against torch's own layers, and exact
meta-gradients through batch norm and pooling against a plain per-task loop in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

import engine
from engine.algorithms.base import Algorithm
from engine.classification import DIGITS_TEST, DIGITS_TRAIN, DIGITS_VAL, ROTATIONS, Digits, load_digits
from engine.conv import Conv4
from engine.errors import ConfigError
from engine.model import ImageMLP
from tests.conftest import assert_matches_loop



def reference_conv(model: Conv4, params, x, step=None):
    """One task through torch's own layers: conv2d, batch_norm on the batch's statistics, max_pool2d."""
    norm = model._norm_set(step)
    h = x
    for i in range(model.blocks):
        h = nnf.conv2d(h, params[f"block{i}.conv.weight"], params[f"block{i}.conv.bias"], padding=1)
        h = nnf.batch_norm(h, None, None, params[f"block{i}.norm{norm}.weight"], params[f"block{i}.norm{norm}.bias"],
                           training=True, eps=1e-5)
        h = nnf.max_pool2d(torch.relu(h), 2, ceil_mode=True)
    return nnf.linear(h.flatten(1), params["head.weight"].T, params["head.bias"])


def small_episodes(tasks=3, ways=3, shots=2, query=2, seed=0):
    family = Digits(ways=ways, dtype=torch.float64)
    return family, family.sample(tasks, shots, query, torch.Generator().manual_seed(seed))


# -- data ---------------------------------------------------------------------------------------
def test_digits_are_forty_classes_split_by_digit_with_no_digit_in_two_splits():
    data = load_digits()
    assert data.images.shape == (1797, 1, 8, 8) and 0 <= data.images.min() and data.images.max() <= 1
    assert len(data.names) == 40 and sorted(c for s in data.splits.values() for c in s) == list(range(40))
    digit_of = lambda c: c // len(ROTATIONS)  # noqa: E731
    assert {digit_of(c) for c in data.splits["train"]} == set(DIGITS_TRAIN)
    assert {digit_of(c) for c in data.splits["val"]} == set(DIGITS_VAL)
    assert {digit_of(c) for c in data.splits["test"]} == set(DIGITS_TEST)
    members = data.members()
    seven = int(members[7 * 4][0])  # a 7 and the same 7 turned 90 degrees: one image, two classes
    assert int(members[7 * 4 + 1][0]) == seven and int(data.labels[seven]) == 7
    assert torch.equal(torch.rot90(data.image(seven, 7 * 4), 1, dims=(1, 2)), data.image(seven, 7 * 4 + 1))
    assert data.names[7 * 4 + 1] == "7 turned 90°"


def test_an_episode_has_n_ways_k_shots_labels_permuted_and_images_of_its_classes():
    family = Digits(ways=5)
    batch = family.sample(8, 3, 4, torch.Generator().manual_seed(1))
    assert batch.x_support.shape == (8, 15, 1, 8, 8) and batch.x_query.shape == (8, 20, 1, 8, 8)
    assert batch.y_support.dtype == torch.long
    data, members = family.data, family.data.members()
    for t in range(8):
        classes = batch.params["classes"][t].tolist()
        assert len(set(classes)) == 5 and set(classes) <= set(data.splits["train"])
        assert torch.bincount(batch.y_support[t]).tolist() == [3] * 5 and torch.bincount(batch.y_query[t]).tolist() == [4] * 5
        for images, labels in ((batch.x_support[t], batch.y_support[t]), (batch.x_query[t], batch.y_query[t])):
            for image, label in zip(images, labels):  # every image is one of its class's members, turned as its class is
                cls = classes[label]
                pool = torch.stack([data.image(int(i), cls) for i in members[cls]])
                assert (pool == image).flatten(1).all(1).any()
        support = {tuple(img.flatten().tolist()) for img in batch.x_support[t]}
        assert not support & {tuple(img.flatten().tolist()) for img in batch.x_query[t]}  # no image in both
    # the label of a class changes across episodes: classes are labelled by a fresh order each time
    firsts = batch.params["classes"][:, 0].tolist()
    assert len(set(firsts)) > 1


def test_episodes_come_from_the_seed_and_the_split():
    family = Digits(ways=5)
    a = family.sample(4, 1, 2, torch.Generator().manual_seed(7))
    b = family.sample(4, 1, 2, torch.Generator().manual_seed(7))
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.params["classes"], b.params["classes"])
    test = family.with_split("test").sample(20, 1, 1, torch.Generator().manual_seed(7))
    assert set(test.params["classes"].flatten().tolist()) <= set(family.data.splits["test"])


def test_bad_episode_settings_are_one_sentence():
    with pytest.raises(ConfigError, match="--ways must be at most 8"):
        Digits(ways=9)
    with pytest.raises(ConfigError, match="--ways must be a whole number from 2"):
        Digits(ways=1)
    with pytest.raises(ConfigError, match="no setting 'amplitude'"):
        Digits(amplitude=[1, 2])
    with pytest.raises(ConfigError, match="more than the 17. that the smallest class of the digits family's train split"):
        Digits(ways=5).sample(2, 100, 100, torch.Generator())
    with pytest.raises(ConfigError, match="more than the 1.. that the smallest class of the digits family's"):
        Digits(ways=5).check_episode(100, 100)


# -- models -------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm_steps", [0, 3])
def test_the_conv_net_equals_torchs_layers_one_task_at_a_time(norm_steps):
    family, batch = small_episodes()
    model = Conv4((4, 5, 6), input_shape=family.input_shape, out_features=3, norm_steps=norm_steps)
    generator = torch.Generator().manual_seed(0)
    params = model.init(generator, dtype=torch.float64)
    params = {n: v + 0.1 * torch.randn(v.shape, generator=generator, dtype=torch.float64) for n, v in params.items()}
    per_task = {n: torch.stack([v + 0.01 * t for t in range(3)]) for n, v in params.items()}
    for step in (0, 1, 5):
        shared = model.forward(params, batch.x_support, step)
        batched = model.forward(per_task, batch.x_support, step)
        assert shared.shape == (3, 6, 3)
        for t in range(3):
            torch.testing.assert_close(shared[t], reference_conv(model, params, batch.x_support[t], step))
            task_params = {n: v[t] for n, v in per_task.items()}
            torch.testing.assert_close(batched[t], reference_conv(model, task_params, batch.x_support[t], step))
    if norm_steps:  # each inner step its own scale and shift (MAML++'s BNWB), the last one reused beyond
        changed = dict(params, **{"block0.norm.step1.weight": params["block0.norm.step1.weight"] * 3})
        assert torch.equal(model.forward(changed, batch.x_support, 0), model.forward(params, batch.x_support, 0))
        assert not torch.equal(model.forward(changed, batch.x_support, 1), model.forward(params, batch.x_support, 1))
        torch.testing.assert_close(model.forward(params, batch.x_support, 2), model.forward(params, batch.x_support, 9))


def test_batch_norm_uses_each_tasks_own_statistics():
    """A task's predictions do not change when another task of the batch changes."""
    family, batch = small_episodes()
    model = Conv4((4, 4), input_shape=family.input_shape, out_features=3)
    params = model.init(torch.Generator().manual_seed(0), dtype=torch.float64)
    other = batch.x_support.clone()
    other[1:] = other[1:] * 5 + 1
    torch.testing.assert_close(model.forward(params, other)[0], model.forward(params, batch.x_support)[0])


def test_the_image_mlp_is_the_mlp_on_flattened_images_and_takes_the_general_path():
    family, batch = small_episodes()
    model = engine.make_model(engine.ModelConfig(hidden=(7,)), family.input_dim, 3, family.input_shape)
    assert isinstance(model, ImageMLP) and model.in_features == 64
    flat = engine.MLP(hidden=(7,), in_features=64, out_features=3)
    params = model.init(torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(model.forward(params, batch.x_support), flat.forward(params, batch.x_support.flatten(2)))
    algorithm = engine.make_algorithm("maml", model, loss=family.loss)
    assert algorithm.backend_choice(shots=6) == "torch.func"
    with pytest.raises(ValueError, match="cavia appends its context to the input"):
        engine.make_algorithm("cavia", model, loss=family.loss)
    with pytest.raises(ValueError, match="takes images"):
        engine.make_model(engine.ModelConfig(kind="conv4"), 1, 1)


CORE = sorted(n for n, cls in engine.ALGORITHMS.items() if cls.meta_step is Algorithm.meta_step and n not in ("cavia",))


@pytest.mark.parametrize("name", CORE)
def test_exact_meta_gradients_through_batch_norm_and_pooling_equal_the_plain_loop(name):
    """Second order (where the algorithm asks for it) through conv, batch norm and max-pool, float64,
    against one task at a time with autograd.grad(create_graph=True) and nnf.cross_entropy."""
    family, batch = small_episodes(tasks=2, ways=3, shots=2, query=2)
    model = Conv4((3, 4), input_shape=family.input_shape, out_features=3, norm_steps=3 if name == "mamlpp" else 0)
    algorithm = engine.make_algorithm(name, model, inner_lr=0.1, inner_steps=2, loss=family.loss)
    params = {n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}
    grads = assert_matches_loop(algorithm, params, batch, progress=0.5, loss_fn=nnf.cross_entropy, rtol=1e-8, atol=1e-10)
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("block0.conv"))  # reaches the first block


def test_second_order_is_not_first_order_through_the_conv_net():
    """The Hessian terms through batch norm matter: MAML's and FOMAML's meta-gradients differ."""
    family, batch = small_episodes(tasks=2, ways=3, shots=2, query=2)
    model = Conv4((3, 4), input_shape=family.input_shape, out_features=3)
    params = model.init(torch.Generator().manual_seed(0), dtype=torch.float64)
    _, second = engine.make_algorithm("maml", model, inner_lr=0.5, inner_steps=2, loss=family.loss).meta_gradient(params, batch)
    _, first = engine.make_algorithm("fomaml", model, inner_lr=0.5, inner_steps=2, loss=family.loss).meta_gradient(params, batch)
    gap = max(float((second[n] - first[n]).abs().max()) for n in second)
    assert gap > 1e-6


# -- protonet and the other algorithms on classification ------------------------------------------
def test_protonet_is_the_softmax_over_negative_squared_distances_to_the_class_means():
    family, batch = small_episodes(tasks=3, ways=3, shots=2, query=2)
    model = Conv4((3, 4), input_shape=family.input_shape, out_features=3)
    algorithm = engine.make_algorithm("protonet", model, loss=family.loss)
    params = {n: v.double() for n, v in algorithm.init(torch.Generator().manual_seed(0), "cpu").items()}
    assert not set(params) & set(model.head_names)  # the embedding alone is meta-learned
    loss, grads = algorithm.meta_gradient(params, batch)
    reference_params = {n: v.detach().clone().requires_grad_() for n, v in params.items()}
    total = 0.0
    for t in range(3):  # one task at a time, the formula of Snell et al. written out
        body = {**reference_params, "head.weight": torch.zeros(model.feature_size, 3, dtype=torch.float64),
                "head.bias": torch.zeros(3, dtype=torch.float64)}
        support = model._features_one(body, batch.x_support[t], None)
        query = model._features_one(body, batch.x_query[t], None)
        centres = torch.stack([support[batch.y_support[t] == k].mean(0) for k in range(3)])
        logits = -torch.cdist(query, centres).square()
        total = total + nnf.cross_entropy(logits, batch.y_query[t])
    total = total / 3
    expected = torch.autograd.grad(total, list(reference_params.values()))
    torch.testing.assert_close(loss, total.detach())
    for name, g in zip(reference_params, expected):
        torch.testing.assert_close(grads[name], g, rtol=1e-8, atol=1e-10)
    history = algorithm.adapt(params, batch.x_support, batch.y_support, 2, batch.x_query, batch.y_query)
    # step 0, before the support set: a zero head, every class tied (argmax picks label 0, a third of a balanced query)
    torch.testing.assert_close(history.query_metrics[0]["accuracy"], torch.full((3,), 1 / 3, dtype=torch.float64))
    torch.testing.assert_close(history.query_loss[1].mean(), total.detach())  # step 1: the prototypes
    torch.testing.assert_close(history.query_loss[0], torch.full((3,), torch.log(torch.tensor(3.0)).item(), dtype=torch.float64))


def test_protonet_refuses_regression_in_one_sentence():
    with pytest.raises(ValueError, match="pick a classification task family"):
        engine.make_algorithm("protonet", engine.MLP())
    with pytest.raises(ValueError, match="pick a classification task family"):
        from engine.trainer import MetaLearner

        MetaLearner(engine.RunConfig().replace(algo={"name": "protonet"}), "cpu")


CLASSIFIERS = ["maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "r2d2", "pretrain", "scratch", "protonet"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_algorithm_the_issue_names_trains_and_evaluates_on_digits(name):
    from engine.evaluate import evaluate
    from engine.trainer import MetaLearner

    config = engine.RunConfig().replace(
        task={"name": "digits", "ranges": {"ways": 3}}, model={"kind": "conv4", "hidden": (4, 4)},
        algo={"name": name, "inner_lr": 0.1, "inner_steps": 1},
        train={"meta_batch_size": 2, "shots": 1, "query": 2})
    learner = MetaLearner(config, "cpu")
    for _ in range(2):
        metrics = learner.outer_step()
    assert metrics.finite
    result = evaluate(learner.algorithm, learner.parameters(), learner.family, shots=1, steps=2, tasks=6, query=3)
    assert result.split == "test" and result.ways == 3 and result.loss == "cross_entropy"
    assert all(0.0 <= a <= 1.0 for a in result.metrics["accuracy"]) and all(c is not None for c in result.metrics_ci95["accuracy"])


def pretrain_learner(hidden=(16,), ways=3, shots=2, dtype=torch.float64):
    from engine.trainer import MetaLearner

    config = engine.RunConfig().replace(
        task={"name": "digits", "ranges": {"ways": ways}}, model={"hidden": hidden},
        algo={"name": "pretrain", "inner_lr": 0.3, "inner_steps": 1},
        train={"meta_batch_size": 3, "shots": shots, "query": 2})
    learner = MetaLearner(config, "cpu")
    if dtype == torch.float64:
        learner.params = {n: v.detach().double().requires_grad_() for n, v in learner.params.items()}
        learner.family = Digits(ways=ways, dtype=torch.float64)
    return learner


def test_pretrain_on_classification_trains_a_global_classifier_over_the_meta_train_classes():
    """Chen et al. 2019's Baseline: the gradient is that of cross-entropy over the 24 meta-train
    classes' own labels (not the episode's 0..N-1), computed here by hand."""
    learner = pretrain_learner()
    algorithm, params = learner.algorithm, learner.params
    weight, bias = params["pretrain.classifier.weight"], params["pretrain.classifier.bias"]
    assert weight.shape == (16, len(DIGITS_TRAIN) * 4) and bias.shape == (len(DIGITS_TRAIN) * 4,)
    assert all(float(params[n].detach().abs().max()) == 0 for n in algorithm.model.head_names)  # the episode head starts at zero
    batch = learner.family.sample(3, 2, 2, torch.Generator().manual_seed(4))
    _, grads = algorithm.meta_gradient(params, batch)
    classes = sorted(Digits().train_classes)
    loss = 0.0
    x = torch.cat([batch.x_support, batch.x_query], 1)
    y = torch.cat([batch.y_support, batch.y_query], 1)
    for t in range(3):
        h = torch.relu(x[t].flatten(1) @ params["layer0.weight"] + params["layer0.bias"])  # the body: one hidden layer
        targets = torch.tensor([classes.index(int(batch.params["classes"][t, int(label)])) for label in y[t]])
        loss = loss + nnf.cross_entropy(h @ weight + bias, targets, reduction="sum")
    loss = loss / y.numel()
    names = [n for n in params if n not in algorithm.model.head_names]
    expected = torch.autograd.grad(loss, [params[n] for n in names])
    for name, value in zip(names, expected):
        torch.testing.assert_close(grads[name], value, rtol=1e-10, atol=1e-12)
    assert all(float(grads[n].abs().max()) == 0 for n in algorithm.model.head_names)


def test_pretrain_fine_tunes_a_new_zero_head_only_a_nearest_centroid_step():
    """At test time the body is fixed and a fresh N-way head starts at zero; its first SGD step on
    the support cross-entropy is W_c = rate * (mean feature of class c - mean feature) / N, b = 0."""
    learner = pretrain_learner(ways=4, shots=3)
    algorithm, params = learner.algorithm, learner.parameters()
    params = {n: v.double() for n, v in params.items()}
    batch = learner.family.sample(2, 3, 2, torch.Generator().manual_seed(9))
    history = algorithm.adapt(params, batch.x_support, batch.y_support, steps=1, x_query=batch.x_query, y_query=batch.y_query)
    adapted = history.params[-1]
    body = [n for n in algorithm.model.names if n not in algorithm.model.head_names]
    for name in body:
        assert torch.equal(adapted[name].expand_as(adapted[name]), params[name].expand_as(adapted[name]))
    features = algorithm.model.features(algorithm.model_params(params), batch.x_support)  # (tasks, N*K, F)
    onehot = nnf.one_hot(batch.y_support, 4).double()
    means = onehot.transpose(1, 2) @ features / 3  # (tasks, N, F)
    expected = 0.3 * (means - features.mean(1, keepdim=True)) / 4
    head_weight, head_bias = algorithm.model.head_names
    torch.testing.assert_close(adapted[head_weight].transpose(-1, -2), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(adapted[head_bias], torch.zeros_like(adapted[head_bias]), rtol=0, atol=1e-12)
    assert history.query_loss[0].allclose(torch.full((2,), torch.log(torch.tensor(4.0)).item(), dtype=torch.float64))


def test_pretrain_refuses_a_batch_of_classes_it_has_no_column_for():
    learner = pretrain_learner()
    batch = learner.family.with_split("test").sample(2, 2, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="meta-train classes only"):
        learner.algorithm.meta_gradient(learner.params, batch)


def test_training_logs_meta_validation_accuracy_and_keeps_the_best_state(tmp_path):
    import json

    from engine.checkpoint import RunDirectory, load_checkpoint
    from engine.trainer import train

    config = engine.RunConfig().replace(
        task={"name": "digits", "ranges": {"ways": 3}}, model={"hidden": (16,)},
        algo={"name": "maml", "inner_lr": 0.5, "inner_steps": 1},
        train={"steps": 60, "meta_batch_size": 4, "shots": 1, "query": 3, "log_every": 10, "checkpoint_every": 30})
    train(config, tmp_path / "run", device="cpu")
    records = RunDirectory(tmp_path / "run").read_metrics()
    values = [r["val_accuracy"] for r in records]
    assert len(values) == 6 and all(0 <= v <= 1 for v in values)
    marker = json.loads((tmp_path / "run" / "best.json").read_text())
    best = max(values)
    assert marker["val_accuracy"] == best and marker["step"] == records[values.index(best)]["step"]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == marker["step"]
    # a resume measures against the kept best: best.pt is replaced only by a better state
    train(config, tmp_path / "run", device="cpu", resume=True, steps=80)
    later = [r["val_accuracy"] for r in RunDirectory(tmp_path / "run").read_metrics()][6:]
    marker_after = json.loads((tmp_path / "run" / "best.json").read_text())
    assert marker_after["val_accuracy"] == max(best, *later)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["step"] == marker_after["step"]


# -- omniglot, on a small collection in the archive's layout --------------------------------------
@pytest.fixture
def little_omniglot(tmp_path):
    from engine import omniglot

    return omniglot.make_synthetic(tmp_path / "omniglot", alphabets=4, characters_per_alphabet=4, drawings=6)


def test_omniglot_reads_the_archive_layout_resizes_rotates_and_splits_by_character(little_omniglot):
    from engine import omniglot

    data = omniglot.load(little_omniglot)
    assert data.images.shape == (16 * 6, 1, 28, 28) and data.images.dtype == torch.uint8
    assert data.num_classes == 64 and data.rotations == 4
    characters = {s: {c // 4 for c in data.splits[s]} for s in ("train", "val", "test")}
    assert sum(len(v) for v in characters.values()) == 16 and not characters["train"] & characters["test"]
    assert not characters["val"] & (characters["train"] | characters["test"]) and len(characters["val"]) == 2
    assert all({c * 4 + r for r in range(4)} <= set(data.splits[s]) for s, chars in characters.items() for c in chars)
    ink = data.image(0, 0)
    assert ink.shape == (1, 28, 28) and ink.max() == 1.0 and ink.mean() < 0.5  # ink 1 on paper 0
    assert (little_omniglot / omniglot.CACHE).is_file()
    family = engine.make_task_family("omniglot", data_dir=str(little_omniglot), ways=5)
    batch = family.with_split("test").sample(3, 1, 2, torch.Generator().manual_seed(0))
    assert batch.x_support.shape == (3, 5, 1, 28, 28) and set(batch.params["classes"].flatten().tolist()) <= set(data.splits["test"])


def test_the_omniglot_cache_is_reused_and_a_damaged_one_rebuilt(little_omniglot):
    from engine import omniglot

    first = omniglot.load(little_omniglot).images.clone()
    omniglot._LOADED.clear()
    cache = little_omniglot / omniglot.CACHE
    stamp = cache.stat().st_mtime_ns
    assert torch.equal(omniglot.load(little_omniglot).images, first) and cache.stat().st_mtime_ns == stamp  # read, not rebuilt
    omniglot._LOADED.clear()
    cache.write_bytes(b"not a cache")
    assert torch.equal(omniglot.load(little_omniglot).images, first)
    assert cache.stat().st_size > 1000


def test_omniglot_problems_are_one_sentence(tmp_path):
    from engine import omniglot

    with pytest.raises(ConfigError, match="no Omniglot in .*maml-tui download omniglot, or give --data-dir"):
        engine.make_task_family("omniglot", data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--data-dir must be a folder's path"):
        engine.make_task_family("omniglot", data_dir="a\nb")
    archive = tmp_path / "served"
    archive.mkdir()
    import zipfile

    with zipfile.ZipFile(archive / "images_background.zip", "w") as z:
        z.writestr("images_background/A/c1/x.png", b"")
    with pytest.raises(ConfigError, match="arrived damaged"):
        omniglot.download(tmp_path / "got", url=f"file://{archive}/{{name}}.zip")
    assert not list((tmp_path / "got").glob("*.tmp")) and not (tmp_path / "got" / "images_background").exists()
    with pytest.raises(ConfigError, match="cannot download .* with no network"):
        omniglot.download(tmp_path / "got", url=f"file://{tmp_path}/nowhere/{{name}}.zip")


def test_download_checks_the_sum_unpacks_and_reports_progress(tmp_path, monkeypatch):
    import hashlib

    from engine import omniglot

    served = omniglot.make_synthetic(tmp_path / "src", alphabets=6, characters_per_alphabet=1, drawings=2)
    import zipfile

    sums = {}
    for name in omniglot.ARCHIVES:
        with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as z:
            for path in sorted((served / name).rglob("*.png")):
                z.write(path, path.relative_to(served))
        sums[name] = hashlib.md5((tmp_path / f"{name}.zip").read_bytes()).hexdigest()
    monkeypatch.setattr(omniglot, "ARCHIVES", sums)
    seen = []
    root = omniglot.download(tmp_path / "got", lambda name, done, total: seen.append((name, done)), url=f"file://{tmp_path}/{{name}}.zip")
    assert {name for name, _ in seen} == set(sums) and len(omniglot.characters(root)) == 6


def test_train_and_eval_on_omniglot_through_the_cli(little_omniglot, tmp_path):
    from typer.testing import CliRunner

    from maml_tui.cli import app

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--task", "omniglot", "--data-dir", str(little_omniglot), "--model", "conv4",
                                      "--hidden", "4,4", "--ways", "3", "--shots", "1", "--query", "2", "--meta-batch", "2",
                                      "--inner-lr", "0.3", "--steps", "4", "--log-every", "2", "--out", str(run), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (run / "best.pt").is_file()
    evaluated = CliRunner().invoke(app, ["eval", str(run / "best.pt"), "--tasks", "5", "--steps", "1", "--query", "2"],
                                   env={"COLUMNS": "200"})
    assert evaluated.exit_code == 0, evaluated.output
    assert "accuracy" in evaluated.output and "3-way 1-shot" in evaluated.output
    refused = CliRunner().invoke(app, ["train", "--task", "digits", "--data-dir", str(little_omniglot)])
    assert refused.exit_code == 1 and "needs none" in refused.output
    refused = CliRunner().invoke(app, ["train", "--task", "sinusoid", "--ways", "5"])
    assert refused.exit_code == 1 and "is regression" in refused.output
    refused = CliRunner().invoke(app, ["train", "--task", "sinusoid", "--model", "conv4"])
    assert refused.exit_code == 1 and "takes images" in refused.output


def test_a_classification_run_that_cannot_start_leaves_no_directory(tmp_path):
    from typer.testing import CliRunner

    from maml_tui.cli import app

    for args, words in ((["--ways", "9"], "--ways must be at most 8"), (["--shots", "100", "--query", "100"], "more than the"),
                        (["--model", "conv4", "--hidden", ""], "needs at least one block")):
        result = CliRunner().invoke(app, ["train", "--task", "digits", *args, "--steps", "1", "--out", str(tmp_path / "run")])
        assert result.exit_code == 1 and words in result.output, result.output
        assert not (tmp_path / "run").exists()
