"""Hostile and broken files (issue 8): a checkpoint whose contents do not fit the model its config
describes is refused with one sentence naming the file and the first thing wrong, before any of it
reaches torch (Adam moments of the wrong shape corrupted memory in the fused kernel), and the file
is left byte-identical; a resume that asks for nothing is refused before any file is touched."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
import torch

from engine.checkpoint import RunDirectory, RunError
from engine.config import RunConfig
from engine.trainer import MetaLearner, train


def tiny_run(path, algo: str = "maml", steps: int = 20):
    config = RunConfig().replace(model={"hidden": (8, 8)}, algo={"name": algo},
                                 train={"steps": steps, "meta_batch_size": 2, "shots": 3, "query": 3,
                                        "log_every": 10, "checkpoint_every": 10})
    train(config, path, device="cpu")
    return path


def digest(path) -> dict[str, str]:
    # every file of the run but the lock's note of who last wrote it
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file() and f.name != ".lock"}


def corrupt(run, change) -> None:
    path = RunDirectory(run).checkpoint_path
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def _first_moment(payload):
    return next(iter(payload["optimizer"]["state"].values()))


CASES = {
    "Adam moment of the wrong shape": (lambda p: _first_moment(p).update(exp_avg=torch.zeros(3, 3)), "exp_avg for parameter"),
    "Adam second moment NaN": (lambda p: _first_moment(p)["exp_avg_sq"].fill_(float("nan")), "exp_avg_sq for parameter"),
    "Adam second moment negative": (lambda p: _first_moment(p)["exp_avg_sq"].fill_(-1.0), "negative"),
    "Adam moment a string": (lambda p: _first_moment(p).update(exp_avg="x"), "exp_avg for parameter"),
    "Adam step infinite": (lambda p: _first_moment(p).update(step=torch.tensor(float("inf"))), "step count"),
    "Adam covers too few parameters": (lambda p: p["optimizer"]["param_groups"][0]["params"].pop(), "covers"),
    "Adam rate NaN": (lambda p: p["optimizer"]["param_groups"][0].update(lr=float("nan")), "lr"),
    "negative step": (lambda p: p.update(step=-5), "step -5"),
    "huge step": (lambda p: p.update(step=10**30), "is not a whole number"),
    "float step": (lambda p: p.update(step=3.5), "is not a whole number"),
    "complex parameter": (lambda p: p["params"].update({"layer0.weight": torch.zeros(8, 1, dtype=torch.complex64)}), "layer0.weight"),
    "RNG state of the wrong size": (lambda p: p["rng"].update(tasks=torch.zeros(7, dtype=torch.uint8)), "random-number state"),
    "RNG state a string": (lambda p: p.update(rng="seed"), "random-number state"),
}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("good") / "run")


@pytest.mark.parametrize("case", CASES)
def test_a_checkpoint_that_does_not_fit_is_refused_in_one_sentence_and_left_as_it_was(good_run, tmp_path, case):
    import shutil

    change, words = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    corrupt(run, change)
    before = digest(run)
    with pytest.raises(RunError) as caught:
        MetaLearner.from_run(run, "cpu")
    message = str(caught.value)
    assert str(run) in message and words in message and "\n" not in message, message
    with pytest.raises(RunError):
        train(RunConfig(), run, device="cpu", resume=True)
    assert digest(run) == before  # a refused resume touches nothing


def test_the_cli_refuses_a_corrupt_adam_state_with_one_sentence_and_no_traceback(good_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    corrupt(run, CASES["Adam moment of the wrong shape"][0])
    before = digest(run)
    for command in (["train", "--resume", str(run), "--steps", "40"], ["eval", str(run), "--tasks", "4"]):
        done = subprocess.run([sys.executable, "-m", "maml_tui", *command], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0, command
        output = done.stdout + done.stderr
        assert "Traceback" not in output and "exp_avg" in output, output
    assert digest(run) == before


def test_a_resume_to_a_step_already_reached_is_refused_and_changes_nothing(good_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    before = digest(run)
    for steps in (5, 20):
        with pytest.raises(RunError) as caught:
            train(RunConfig(), run, device="cpu", resume=True, steps=steps)
        assert "already at outer step 20" in str(caught.value) and "finish its own target (20)" in str(caught.value)
    assert digest(run) == before
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--resume", str(run), "--steps", "5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "already at outer step 20" in done.stdout + done.stderr
    assert digest(run) == before


def test_a_good_checkpoint_still_loads_and_resumes(good_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    learner = MetaLearner.from_run(run, "cpu")
    assert learner.step == 20
    train(RunConfig(), run, device="cpu", resume=True, steps=30)
    assert MetaLearner.from_run(run, "cpu").step == 30


def test_user_text_is_never_read_as_markup(tmp_path):
    run = tmp_path / "[bold]runs[red]" / "odd[/]end"  # "[/]" spans two directories: "odd[" and "]end"
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--out", str(run), "--steps", "3", "--hidden", "4",
                           "--meta-batch", "2", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and str(run) in done.stdout, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--out", str(run), "--steps", "3"],
                          capture_output=True, text=True, timeout=120)  # refused: it exists; the path printed as typed
    assert done.returncode != 0 and "Traceback" not in done.stderr and "[bold]runs[red]/odd[/]end" in done.stderr, done.stderr
    import os

    done = subprocess.run([sys.executable, "-m", "maml_tui", "eval", str(run), "--tasks", "3"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})  # wide enough that no header wraps
    assert done.returncode == 0 and "]end" in done.stdout, done.stdout + done.stderr


async def test_the_explorer_shows_a_path_with_brackets_as_it_is(tmp_path):
    from test_app import make_app, ready, until

    odd = tmp_path / "[/]not [bold]a run"
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        main = await ready(pilot)
        await pilot.press("l")
        app.screen.query_one("#path").value = str(odd)
        await pilot.press("enter")
        await until(pilot, lambda: "[/]not [bold]a run" in main.message, what="the error naming the path")
        await pilot.pause(0.3)  # the notification and the status line drew it without a markup error
        assert app.is_running
        await pilot.press("N")
        assert "[/]not [bold]a run" in str(app.screen.query_one("#message-list").render())


def _sparse(outer_lr: float = 0.001, inner_lr: float | None = None, steps: int = 400) -> RunConfig:
    return RunConfig().replace(model={"hidden": (40, 40)}, algo={"inner_lr": inner_lr} if inner_lr else {},
                               train={"steps": steps, "checkpoint_every": 50, "log_every": 1000, "outer_lr": outer_lr})


@pytest.mark.parametrize("outer_lr", [3.0, 1.0])
def test_with_sparse_logging_an_exploding_run_never_overwrites_the_good_checkpoint(tmp_path, outer_lr):
    from engine.trainer import DivergedError, Probe

    run = tmp_path / "run"
    with pytest.raises(DivergedError) as caught:
        train(_sparse(outer_lr), run, device="cpu")  # the case: checkpoints every 50, logs every 1000
    assert "last good checkpoint" in str(caught.value)
    kept = MetaLearner.from_run(run, "cpu")  # it loads, and it is the good state, not the exploded one
    probe = Probe(kept)
    assert probe.check(kept) == "" and probe.losses(kept)[1] < 50
    assert RunDirectory(run).read_metrics() == [] or all(r["query_loss_after"] < 1e3 for r in RunDirectory(run).read_metrics())


def test_a_run_whose_inner_loop_makes_things_worse_does_not_finish_with_exit_0(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--out", str(run), "--steps", "200", "--inner-lr", "5",
                           "--checkpoint-every", "100", "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "inner learning rate 5 is likely too large" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert MetaLearner.from_run(run, "cpu").step == 0  # the only state known to be good


def test_probing_checkpoints_leaves_training_bit_identical(tmp_path):
    config = RunConfig().replace(model={"hidden": (8, 8)}, train={"steps": 60, "checkpoint_every": 10, "log_every": 20,
                                                                   "meta_batch_size": 3})
    train(config, tmp_path / "probed", device="cpu")
    learner = MetaLearner(config, "cpu")
    for _ in range(60):
        learner.outer_step(metrics=False)
    saved = MetaLearner.from_run(tmp_path / "probed", "cpu")
    for name, value in learner.params.items():
        assert torch.equal(value, saved.params[name]), name


def test_one_writer_per_run_the_second_is_refused_and_a_killed_writer_leaves_no_stale_lock(good_run, tmp_path):
    import os
    import shutil
    import signal
    import time

    from engine.explorer import ExplorerSession

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    first = subprocess.Popen([sys.executable, "-m", "maml_tui", "train", "--resume", str(run), "--steps", "10000000", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while f"process {first.pid}" not in ((run / ".lock").read_text() if (run / ".lock").exists() else ""):
            assert time.monotonic() < deadline and first.poll() is None, "the first writer did not start"
            time.sleep(0.05)
        metrics_before = RunDirectory(run).read_metrics()
        second = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--resume", str(run), "--steps", "50"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "Traceback" not in second.stderr
        assert f"is being written by process {first.pid} (maml-tui train)" in second.stderr, second.stderr
        session = ExplorerSession.open(config=RunConfig().replace(model={"hidden": (8, 8)}), device="cpu")
        with pytest.raises(RunError, match=f"process {first.pid}"):
            session.save(run)  # the explorer is refused too
        records = RunDirectory(run).read_metrics()
        steps = [r["step"] for r in records]
        assert steps == sorted(set(steps)) and records[: len(metrics_before)] == metrics_before  # one writer's records only
    finally:
        os.kill(first.pid, signal.SIGKILL)  # as a crash would: no chance to release anything
        first.wait(30)
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a save")  # what an interrupted save leaves
    train(RunConfig(), run, device="cpu", resume=True, steps=MetaLearner.from_run(run, "cpu").step + 10)
    assert not list(run.glob(".*.tmp"))  # the next writer took the lock (the kernel freed it) and cleaned up
    steps = [r["step"] for r in RunDirectory(run).read_metrics()]
    assert steps == sorted(set(steps))


@pytest.mark.parametrize("when", [0.3, 1.0, 2.5])
def test_ctrl_c_at_start_up_or_twice_gives_one_sentence_not_a_traceback(tmp_path, when):
    import signal
    import time

    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "maml_tui", "train", "--out", str(run), "--steps", "100000", "--hidden", "8"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(when)  # importing torch, building the learner, or training
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # and a second one at once
    out, err = process.communicate(timeout=120)
    assert process.returncode in (130, 1, -signal.SIGINT), (process.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if when >= 1.0:  # by then our code runs (earlier, Python itself may still be starting and says nothing)
        assert "Interrupted" in err or "interrupted" in err.lower(), err
    if (run / "checkpoint.pt").is_file():  # whatever was saved still loads
        assert MetaLearner.from_run(run, "cpu").step >= 0


@pytest.mark.parametrize("flags, words", [
    (["--meta-batch", "99999999999"], "--meta-batch must be at most 100,000"),
    (["--hidden", "100000"], "--hidden must be at most 65,536"),
    (["--steps", str(10**30)], "--steps must be at most"),
    (["--inner-lr", "1e308"], "--inner-lr must be at most"),
    (["--inner-lr", "inf"], "finite"),
    (["--inner-lr", "nan"], "--inner-lr"),
    (["--outer-lr", "nan"], "--outer-lr"),
    (["--seed", str(2**64)], "--seed must be at most"),
    (["--meta-batch", "100000", "--shots", "100000"], "GiB"),
    (["--inner-steps", "100000"], "--inner-steps must be at most 1,000"),
])
def test_flags_beyond_their_limits_are_refused_before_any_work(tmp_path, flags, words):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--out", str(run), *flags], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr and words in done.stderr, done.stderr
    assert not run.exists()  # refused before anything was written


@pytest.mark.parametrize("section, key, value, words", [
    ("train", "steps", "many", "--steps must be a whole number"),
    ("train", "seed", 1.5, "--seed must be a whole number"),
    ("train", "meta_batch_size", None, "--meta-batch must be a whole number"),
    ("model", "hidden", [10**9], "--hidden must be at most"),
    ("algo", "inner_lr", "fast", "--inner-lr must be a finite number"),
    ("task", "name", ["sinusoid"], "--task must be a name"),
])
def test_a_config_file_of_the_wrong_shape_is_refused_in_one_sentence(good_run, tmp_path, section, key, value, words):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    path = run / "config.json"
    document = json.loads(path.read_text())
    document["config"][section][key] = value
    path.write_text(json.dumps(document))
    before = digest(run)
    with pytest.raises(RunError) as caught:
        MetaLearner.from_run(run, "cpu")
    assert words in str(caught.value) and "config.json" in str(caught.value), str(caught.value)
    done = subprocess.run([sys.executable, "-m", "maml_tui", "eval", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr and words in done.stderr, done.stderr
    assert digest(run) == before


@pytest.mark.parametrize("arguments, words", [
    (["bench", "--seconds", "inf"], "--seconds must be between"),
    (["bench", "--seconds", "1e-320"], "--seconds must be between"),
    (["bench", "--seconds", "nan"], "--seconds must be between"),
    (["bench", "--out", "."], "is a directory"),
    (["bench", "--out", ""], "give a file name"),
    (["eval", "RUN", "--seed", str(2**70)], "--seed must be between"),
    (["eval", "RUN", "--inner-lr", "inf"], "--inner-lr must be a finite positive number"),
    (["eval", "RUN", "--steps", "100000"], "--steps must be between 0 and 1,000"),
    (["eval", "RUN", "--tasks", "99999999999"], "--tasks must be between"),
    (["train", "--out", ""], "--out must name a run directory"),
])
def test_eval_bench_and_train_flags_out_of_range_get_one_sentence(good_run, arguments, words):
    arguments = [str(good_run) if a == "RUN" else a for a in arguments]
    done = subprocess.run([sys.executable, "-m", "maml_tui", *arguments], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr and words in done.stderr, done.stderr


def test_odd_lines_in_metrics_are_skipped_and_the_run_still_opens(good_run, tmp_path):
    import shutil

    from engine.explorer import ExplorerSession

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    good = RunDirectory(run).read_metrics()
    with open(run / "metrics.jsonl", "a") as file:
        file.write('5\n[1, 2]\n{"step": "x"}\n{"step": true}\n{"step": 1e999}\n"text"\n{"step": 30, "query_loss_af')  # cut short
    assert RunDirectory(run).read_metrics() == good
    session = ExplorerSession.open(run, device="cpu")
    assert [r.step for r in session.records] == [r["step"] for r in good]
    train(RunConfig(), run, device="cpu", resume=True, steps=30)  # a resume drops the odd lines and goes on
    steps = [r["step"] for r in RunDirectory(run).read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 30


@pytest.mark.parametrize("device", ["meta", "xla", "xpu", "cpu:3", "cuda:99", "[/]gpu", "   "])
def test_devices_the_engine_cannot_use_are_refused_by_every_command(good_run, device):
    for command in (["info", "--device", device], ["eval", str(good_run), "--device", device, "--tasks", "2"],
                    ["bench", "--device", device, "--seconds", "0.1"]):
        done = subprocess.run([sys.executable, "-m", "maml_tui", *command], capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "Traceback" not in done.stderr and "device" in done.stderr, (command, done.stderr)


def test_the_python_api_raises_one_family_of_errors_with_the_same_sentence(good_run, tmp_path):
    import engine

    cases = [
        lambda: engine.RunConfig().replace(train={"meta_batch_size": 10**12}).validate(),
        lambda: engine.RunConfig().replace(algo={"name": "nope"}).validate(),
        lambda: engine.MetaLearner.from_run(tmp_path / "missing", "cpu"),
        lambda: engine.MetaLearner(engine.RunConfig(), "xla"),
        lambda: engine.train(engine.RunConfig(), good_run, device="cpu"),  # it already holds a run
    ]
    for case in cases:
        with pytest.raises(engine.MamlTuiError) as caught:
            case()
        assert str(caught.value) and "\n" not in str(caught.value)
        assert isinstance(caught.value, ValueError)  # what scripts caught before still catches it
    assert issubclass(engine.DivergedError, engine.MamlTuiError) and issubclass(engine.RunError, engine.MamlTuiError)


def test_kill_9_at_random_moments_never_leaves_a_run_that_fails_to_load_or_resume(tmp_path):
    """A training process killed at random moments (mid-save included: checkpoints every 5 steps),
    many times over: every surviving run directory loads and resumes, and the next writer leaves no
    temporary file behind. (A longer run for release checks: MAML_TUI_KILL_TRIALS=60.)"""
    import os
    import random
    import signal
    import time

    trials = int(os.environ.get("MAML_TUI_KILL_TRIALS", "6"))
    chance = random.Random(8)
    resumed = 0
    for trial in range(trials):
        run = tmp_path / f"run{trial}"
        process = subprocess.Popen([sys.executable, "-m", "maml_tui", "train", "--out", str(run), "--steps", "100000",
                                    "--hidden", "8", "--meta-batch", "2", "--checkpoint-every", "5", "--log-every", "5",
                                    "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").is_file() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.02)  # however slow the machine, the kill lands while it trains and saves
        time.sleep(chance.uniform(0.0, 1.5))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(30)
        if not (run / "checkpoint.pt").is_file():
            assert not run.exists() or not (run / "config.json").is_file() or (run / "metrics.jsonl").is_file()
            continue  # killed before the first checkpoint: nothing to resume, and nothing claims otherwise
        learner = MetaLearner.from_run(run, "cpu")
        train(RunConfig(), run, device="cpu", resume=True, steps=learner.step + 3)
        assert MetaLearner.from_run(run, "cpu").step == learner.step + 3
        assert not list(run.glob(".*.tmp")), trial
        steps = [r["step"] for r in RunDirectory(run).read_metrics()]
        assert steps == sorted(set(steps)), trial
        resumed += 1
    assert resumed == trials  # every kill landed while training and saving


@pytest.mark.parametrize("command, limits", [
    ("train", ["0 to 10^12", "1 to 100,000", "0 to 1,000", "at most 10^6", "at most 1,000", "65,536", "2^63 - 1",
               "1 to 1,024", "255", "(default: 70000", "(default: the algorithm's own"]),
    ("eval", ["1 to 100,000", "0 to 1,000", "1 to 1,000,000", "2^63 - 1", "at most 10^6", "(default: each run's own)"]),
    ("bench", ["0.05 to 3,600", "1 to 10,000", "writable file"]),
    ("info", ["0 to 1,000", "1 to 100,000"]),
])
def test_every_limit_is_stated_in_help(command, limits):
    """The limits the commands enforce are the ones --help states (and no "[default: ...]" text is
    eaten as markup, leaving a stray " ." where it was)."""
    from typer.testing import CliRunner

    from maml_tui.cli import app

    text = " ".join(CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"}).stdout.split())
    for words in limits:
        assert words in text, (words, text)
    assert " ." not in text.replace("...", "")


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(version=2), "written by a newer maml-tui (format version 2"),
    (lambda d: d.update(version=0), "format version 0, which no maml-tui release wrote"),
    (lambda d: d.pop("version"), "no valid format version"),
    (lambda d: d.update(format="something-else"), "is not a maml-tui run config"),
    (lambda d: d.update(config=[1, 2]), "'config' must be a mapping"),
    (lambda d: d["config"].update(train=[1]), "'train' must be a mapping"),
    (lambda d: d["config"].update(extra={}), "unknown section 'extra'"),
    (lambda d: d.update(created=5), "'created' must be text"),
    (lambda d: d["config"]["task"].update(ranges={"amplitude": [0, 1e300]}), "within ±10,000"),
    (lambda d: d["config"]["task"].update(ranges={"x": [1.0, 1.0]}), "low < high"),
    (lambda d: d["config"]["task"].update(ranges={"speed": [1, 2]}), "has no range 'speed'"),
])
def test_config_json_format_version_and_sections_are_checked_by_name(good_run, tmp_path, change, words):
    import json
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    path = run / "config.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    before = digest(run)
    with pytest.raises(RunError) as caught:
        MetaLearner.from_run(run, "cpu")
    assert words in str(caught.value) and "config.json" in str(caught.value), str(caught.value)
    assert digest(run) == before


def test_a_newer_checkpoint_is_refused_by_name(good_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    corrupt(run, lambda p: p.update(version=7))
    with pytest.raises(RunError, match="newer maml-tui .format version 7; this one reads version 1"):
        MetaLearner.from_run(run, "cpu")


def test_the_explorers_record_log_stays_bounded_and_evenly_spread():
    """Live training records ten steps a second forever; the session keeps at most RECORDS_KEPT of
    them (both explorer processes grew by about 0.3 MiB a minute before), spread evenly."""
    from engine.explorer import RecordLog

    log = RecordLog(kept=100)
    kept = sum(log.offer(step) for step in range(1, 50_001))
    assert 50 <= len(log) <= 100 and kept >= len(log) and log.thinned
    gaps = {b - a for a, b in zip(log, log[1:])}
    assert gaps == {log.stride}, gaps  # evenly spaced over the whole history
    assert log[-1] > 50_000 - log.stride  # and up to date
    opened = RecordLog(list(range(1_000)), kept=100)
    assert len(opened) <= 100 and len({b - a for a, b in zip(opened, opened[1:])}) == 1


def test_a_cut_short_metrics_line_is_dropped_with_a_note_on_resume_and_in_the_explorer(good_run, tmp_path):
    import shutil

    from engine.explorer import ExplorerSession

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    with open(run / "metrics.jsonl", "a") as file:
        file.write('{"step": 30, "query_lo')  # a full disk cut the last line short
    session = ExplorerSession.open(run, "cpu")
    assert session.notes and "skipped 1 line" in session.notes[0] and "metrics.jsonl" in session.notes[0]
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--resume", str(run), "--steps", "25", "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "note: " in done.stderr and "dropped 1 line" in done.stderr, done.stderr
    assert all(line.startswith("{") and line.endswith("}") for line in (run / "metrics.jsonl").read_text().splitlines())


def test_an_odd_autosave_marker_restores_the_model_as_unsaved_with_a_note(good_run, tmp_path):
    import shutil

    from engine.explorer import AUTOSAVE_FILE, ExplorerSession

    autosave = tmp_path / "autosave"
    session = ExplorerSession.open(good_run, "cpu")
    session.autosave(autosave)
    restored = ExplorerSession.restore(autosave, "cpu")
    assert restored.source == str(good_run) and not restored.notes
    (autosave / AUTOSAVE_FILE).write_text('{"format": "maml-tui-autosave", "version": 1, "source": 5}')
    restored = ExplorerSession.restore(autosave, "cpu")
    assert restored.source == "autosave" and restored.saved_step is None and "not known" in restored.notes[0]
    shutil.rmtree(autosave)


def test_two_explorers_open_at_once_autosave_into_directories_of_their_own(tmp_path, monkeypatch):
    """Each explorer locks its autosave directory; a second one takes autosave-2 instead of writing
    into the first one's (config from one, checkpoint from the other)."""
    from maml_tui.paths import autosave_dir, claim_autosave_dir, state_dir

    first, first_lock = claim_autosave_dir()
    second, second_lock = claim_autosave_dir()
    assert first == autosave_dir() and second == state_dir() / "autosave-2"
    other = subprocess.run([sys.executable, "-c", "from maml_tui.paths import claim_autosave_dir; print(claim_autosave_dir()[0])"],
                           capture_output=True, text=True, timeout=60, env={**__import__("os").environ})
    assert other.stdout.strip() == str(state_dir() / "autosave-3"), other.stderr  # another process sees both held
    first_lock.release()
    again, again_lock = claim_autosave_dir()
    assert again == first  # freed when its explorer ends
    again_lock.release()
    second_lock.release()


@pytest.mark.parametrize("arguments", [["eval", "x" * 300], ["train", "--resume", "x" * 300], ["explore", "x" * 300],
                                       ["train", "--out", "x" * 300], ["train", "--out", "a\nb"], ["eval", "a\nb"]])
def test_very_long_names_and_control_characters_in_paths_get_one_sentence(tmp_path, arguments):
    done = subprocess.run([sys.executable, "-m", "maml_tui", *arguments], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not any(tmp_path.iterdir())  # nothing was made
