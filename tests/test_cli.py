"""The headless CLI through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from maml_tui.cli import app

runner = CliRunner()
SMALL = ["--meta-batch", "4", "--shots", "5", "--query", "5", "--hidden", "16,16", "--log-every", "10", "--quiet"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_then_eval_json(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--steps", 30, "--out", run, *SMALL)
    assert result.exit_code == 0, result.output
    assert str(run) in result.output
    assert (run / "checkpoint.pt").is_file() and (run / "config.json").is_file()
    result = invoke("eval", run, run, "--shots", 3, "--steps", 2, "--tasks", 20, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert len(document["runs"]) == 2
    entry = document["runs"][0]
    assert {"run", "algorithm", "shots", "tasks", "steps", "mean", "ci95", "median", "diverged", "loss"} <= set(entry)
    assert entry["algorithm"] == "maml" and entry["shots"] == 3 and entry["tasks"] == 20 and entry["loss"] == "mse"
    assert entry["steps"] == [0, 1, 2] and len(entry["mean"]) == len(entry["ci95"]) == len(entry["median"]) == 3
    assert entry["inner_lr"] == 0.001 and entry["diverged"] == [0, 0, 0]


def test_eval_table_and_resume(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 20, "--out", run, *SMALL).exit_code == 0
    result = invoke("train", "--resume", run, "--steps", 40, "--quiet")
    assert result.exit_code == 0, result.output
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [10, 20, 30, 40]
    result = invoke("eval", run, "--tasks", 10, "--steps", 1)
    assert result.exit_code == 0 and "±" in result.output and "maml" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--steps", "-5"], "--steps must not be negative"),
        (["train", "--meta-batch", "0"], "--meta-batch must be positive"),
        (["train", "--task", "spiral"], "unknown task family 'spiral'"),
        (["train", "--algo", "nonesuch"], "unknown algorithm 'nonesuch'"),
        (["train", "--inner-lr", "0"], "--inner-lr must be positive"),
        (["train", "--hidden", "40,abc"], "--hidden must be comma-separated"),
        (["train", "--device", "tpu"], "unknown device"),
        (["train", "--resume", "/nonexistent/run"], "not a run directory"),
        (["eval", "/nonexistent/run"], "not a run directory"),
        (["eval", ".", "--shots", "0"], "--shots must be between 1 and 100,000"),
        (["bench", "--seconds", "0"], "--seconds must be between 0.05 and 3600"),
        (["--device", "cpu", "train"], "--device, --ascii and --present go after the command"),
        (["train", "--resume", ".", "--algo", "anil"], "--resume continues a run with its own settings, so --algo"),
        (["train", "--out", "/proc/no-such-place/run"], "cannot write the run directory"),
    ],
)
def test_bad_input_gives_one_sentence_and_exit_1(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message.lower() in result.output.lower()
    assert result.output.count("\n") == 1  # one sentence, one line
    assert "Traceback" not in result.output


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 10, "--out", run, *SMALL).exit_code == 0
    (run / "checkpoint.pt").write_bytes(b"garbage")
    result = invoke("eval", run)
    assert result.exit_code == 1 and "not a readable checkpoint" in result.output
    assert (run / "checkpoint.pt").read_bytes() == b"garbage"  # nothing overwritten


def test_existing_run_is_not_overwritten(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 10, "--out", run, *SMALL).exit_code == 0
    before = (run / "checkpoint.pt").read_bytes()
    result = invoke("train", "--steps", 10, "--out", run, *SMALL)
    assert result.exit_code == 1 and "already holds a run" in result.output
    assert (run / "checkpoint.pt").read_bytes() == before


def test_diverging_training_exits_1_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--steps", 200, "--out", run, "--inner-lr", "1e6", "--log-every", 1,
                    "--meta-batch", 4, "--hidden", "8", "--quiet")
    assert result.exit_code == 1 and "diverged" in result.output.lower(), result.output
    from engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoint.pt")["step"] == 0  # the initial, finite parameters


def test_scratch_has_nothing_to_train(tmp_path):
    result = invoke("train", "--algo", "scratch", "--out", tmp_path / "run", *SMALL)
    assert result.exit_code == 0 and (tmp_path / "run" / "checkpoint.pt").is_file()
    assert invoke("eval", tmp_path / "run", "--tasks", 5, "--json").exit_code == 0


def test_info_and_bench():
    result = invoke("info")
    assert result.exit_code == 0 and "torch" in result.output and "device" in result.output
    result = invoke("bench", "--seconds", "0.05", "--meta-batch", "2")
    assert result.exit_code == 0, result.output
    for case in ("second-order, 1 step", "first-order, 1 step", "second-order, 5 steps"):
        assert case in result.output


def test_subprocess_train_and_eval(tmp_path):
    env = {**os.environ, "COLUMNS": "120"}
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--steps", "20", "--out", str(run), *SMALL],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(str(run))
    done = subprocess.run([sys.executable, "-m", "maml_tui", "eval", str(run), "--tasks", "5", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and json.loads(done.stdout)["runs"][0]["tasks"] == 5
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--shots", "-1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "--shots must be positive" in done.stderr and "Traceback" not in done.stderr


def test_explorer_refuses_without_a_tty():
    done = subprocess.run([sys.executable, "-m", "maml_tui"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    assert "needs an interactive terminal" in done.stderr
    assert "\x1b[?1049h" not in done.stdout  # never switched to the alternate screen


def test_ctrl_c_saves_an_exact_checkpoint_and_exits_130(tmp_path):
    import signal
    import time

    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "maml_tui", "train", "--steps", "10000000", "--out", str(run),
                                "--meta-batch", "4", "--hidden", "8", "--log-every", "10", "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    metrics = run / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"--resume {run}" in stderr and "Traceback" not in stderr
    from engine.checkpoint import load_checkpoint

    step = load_checkpoint(run / "checkpoint.pt")["step"]
    assert step > 0
    done = subprocess.run([sys.executable, "-m", "maml_tui", "train", "--resume", str(run), "--steps", str(step + 5), "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and load_checkpoint(run / "checkpoint.pt")["step"] == step + 5


def test_out_never_clobbers_files_that_are_not_a_run(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "config.json").write_text('{"mine": 1}')
    result = invoke("train", "--steps", 5, "--out", target, *SMALL)
    assert result.exit_code == 1 and "not a complete run" in result.output
    assert (target / "config.json").read_text() == '{"mine": 1}'
    afile = tmp_path / "afile"
    afile.write_text("keep")
    result = invoke("train", "--steps", 5, "--out", afile, *SMALL)
    assert result.exit_code == 1 and afile.read_text() == "keep"


def test_resume_with_a_new_target_keeps_it(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 10, "--out", run, *SMALL).exit_code == 0
    assert invoke("train", "--resume", run, "--steps", 20, "--quiet").exit_code == 0
    result = invoke("train", "--resume", run)  # no --steps: the run's own (now 20) target
    assert result.exit_code == 0 and "step 20 of 20" in result.output


def test_algorithm_defaults_options_and_the_registry_listing(tmp_path):
    run = tmp_path / "cavia"
    result = invoke("train", "--algo", "cavia", "--steps", 5, "--out", run, "--option", "context_size=3", *SMALL)
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())["config"]["algo"]
    assert config == {"name": "cavia", "inner_lr": 1.0, "inner_steps": 1, "options": {"context_size": 3}}
    result = invoke("train", "--algo", "cavia", "--steps", 5, "--out", tmp_path / "bad", "--option", "context_size=zero", *SMALL)
    assert result.exit_code == 1 and "context_size of cavia must be an integer, got 'zero'" in result.output
    result = invoke("train", "--steps", 5, "--out", tmp_path / "bad2", "--option", "nothing=1", *SMALL)
    assert result.exit_code == 1 and "maml has no options" in result.output.lower()
    listing = CliRunner().invoke(app, ["algorithms"], env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    for name in ("maml", "mamlpp", "cavia", "alphamaml", "r2d2", "Antoniou", "context_size=5", "sinusoid"):
        assert name in listing.output
    info = CliRunner().invoke(app, ["info", "--algo", "metasgd"], env={"COLUMNS": "200"})
    assert info.exit_code == 0 and "closed_form │ runs" in info.output and "per-entry rates" in info.output


def test_eval_reports_median_and_divergence_and_stays_strict_json(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", "--steps", 10, "--out", run, *SMALL).exit_code == 0
    result = CliRunner().invoke(app, ["eval", str(run), "--tasks", "20", "--steps", "3", "--inner-lr", "5"],
                                env={"COLUMNS": "160"})
    assert result.exit_code == 0 and "median" in result.output and "counts as diverged" in result.output
    result = invoke("eval", run, "--tasks", 20, "--steps", 3, "--inner-lr", 5, "--json")
    document = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in strict JSON"))
    assert document["runs"][0]["diverged"][-1] > 0 and "NaN" not in result.stdout


def test_help_lists_the_registry_without_importing_torch():
    code = "import sys, maml_tui.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "mamlpp" in result.output and "harmonic" in result.output


def test_a_backend_that_refuses_the_algorithm_leaves_no_run_behind(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--algo", "mamlpp", "--backend", "fused", "--steps", 5, "--out", run, *SMALL)
    assert result.exit_code == 1 and "fused backend cannot run this" in result.output
    assert not (run / "checkpoint.pt").exists() and not (run / "config.json").exists()
