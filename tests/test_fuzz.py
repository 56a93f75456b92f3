"""Fuzzing the boundary (issue 8): malformed config.json documents, checkpoints and flag values,
generated from the schemas by hypothesis, are each refused with one sentence that names what is
wrong (or, when a mutation happens to be valid, accepted), never with a traceback, a hang or a
native crash, and no file that already exists changes.

The example budget is fixed and the search derandomized, so CI runs the same cases every time;
``MAML_TUI_FUZZ_EXAMPLES=2000 python -m pytest tests/test_fuzz.py`` is the longer run for a release
(see the README's reliability section).
"""

from __future__ import annotations

import copy
import io
import json
import math
import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")  # a test dependency (pip install -e .[test])
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from engine.checkpoint import RunDirectory  # noqa: E402
from engine.config import LIMITS  # noqa: E402
from engine.errors import MamlTuiError  # noqa: E402
from engine.trainer import MetaLearner  # noqa: E402
from maml_tui.cli import app  # noqa: E402
from tests.test_hostile import digest, tiny_run  # noqa: E402

EXAMPLES = int(os.environ.get("MAML_TUI_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# any JSON value (and the NaN/inf that Python's json writes), of every kind a field must not be
JSON_JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**80, max_value=2**80),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.complex64, torch.int64, torch.uint8, torch.bool]
TENSORS = st.builds(
    lambda shape, dtype, fill: torch.full(shape, fill).to(dtype) if dtype not in (torch.uint8, torch.bool, torch.int64) or math.isfinite(fill)
    else torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 9), max_size=3), st.sampled_from(DTYPES),
    st.sampled_from([0.0, 1.0, -1.0, 1e30, float("nan"), float("inf"), -float("inf")]),
)
CHECKPOINT_JUNK = st.one_of(JSON_JUNK, TENSORS, st.lists(TENSORS, max_size=2))


def leaves(value, path=()):
    """Every place in a nested document (mappings and lists) where a value could be replaced."""
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))


def replaced(document, path, value):
    if not path:
        return value
    document = copy.deepcopy(document)
    place = document
    for key in path[:-1]:
        place = place[key]
    if isinstance(place, tuple):
        return document  # tuples (never in our files' JSON) stay as they are
    place[path[-1]] = value
    return document


def removed(document, path):
    document = copy.deepcopy(document)
    place = document
    for key in path[:-1]:
        place = place[key]
    if isinstance(place, dict):
        del place[path[-1]]
    return document


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("fuzz") / "run")


def tiny_classification_run(path):
    """A digits run of conv4 with pretrain: the classification schema (ways, an image model, and an
    algorithm's own parameters, the global classifier) for the config and checkpoint fuzzers."""
    from engine.config import RunConfig
    from engine.trainer import train

    config = RunConfig().replace(task={"name": "digits", "ranges": {"ways": 3}}, model={"kind": "conv4", "hidden": (4, 4)},
                                 algo={"name": "pretrain", "inner_lr": 0.4},
                                 train={"steps": 4, "meta_batch_size": 2, "shots": 1, "query": 2,
                                        "log_every": 2, "checkpoint_every": 2})
    train(config, path, device="cpu")
    return path


@pytest.fixture(scope="module", params=["sinusoid", "digits"])
def any_run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"fuzz-{request.param}") / "run"
    return tiny_run(folder) if request.param == "sinusoid" else tiny_classification_run(folder)


def assert_refused_or_fine(run, before):
    """Opening the run either works or ends in one sentence of ours naming a file of the run."""
    try:
        learner = MetaLearner.from_run(run, "cpu")
    except MamlTuiError as error:
        message = str(error)
        assert "\n" not in message and str(run) in message, message
    else:
        learner.outer_step()  # an accepted file must also work, not crash later
    assert digest(run) == before  # opening never writes


def draw_change(data, document, junk, places):
    """``document`` with one drawn place replaced by drawn junk, or removed."""
    where = data.draw(st.sampled_from(places), label="where")
    action = data.draw(st.sampled_from(["replace", "remove"]) if where else st.just("replace"), label="action")
    return replaced(document, where, data.draw(junk, label="value")) if action == "replace" else removed(document, where)


def assert_damage_refused_or_fine(run, path, damaged: bytes) -> None:
    """Put ``damaged`` in place of the run's file at ``path``, open the run, and restore the file."""
    original = path.read_bytes()
    try:
        path.write_bytes(damaged)
        assert_refused_or_fine(run, digest(run))
    finally:
        path.write_bytes(original)


@FUZZ
@given(data=st.data())
def test_malformed_config_files_are_refused_in_one_sentence(any_run, tmp_path_factory, data):
    path = RunDirectory(any_run).config_path
    document = json.loads(path.read_text())
    changed = draw_change(data, document, JSON_JUNK, list(leaves(document)))
    assert_damage_refused_or_fine(any_run, path, json.dumps(changed).encode())


@FUZZ
@given(data=st.data())
def test_malformed_checkpoints_are_refused_in_one_sentence(any_run, data):
    path = RunDirectory(any_run).checkpoint_path
    payload = torch.load(io.BytesIO(path.read_bytes()), weights_only=True)
    changed = draw_change(data, payload, CHECKPOINT_JUNK, [p for p in leaves(payload) if p])
    buffer = io.BytesIO()
    torch.save(changed, buffer)
    assert_damage_refused_or_fine(any_run, path, buffer.getvalue())


@FUZZ
@given(data=st.data())
def test_damaged_checkpoint_bytes_are_refused_in_one_sentence(any_run, data):
    path = RunDirectory(any_run).checkpoint_path
    original = path.read_bytes()
    if data.draw(st.booleans(), label="truncate"):
        damaged = original[:data.draw(st.integers(0, len(original) - 1), label="length")]
    else:
        damaged = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            damaged[data.draw(st.integers(0, len(original) - 1))] ^= data.draw(st.integers(1, 255))
        damaged = bytes(damaged)
    assert_damage_refused_or_fine(any_run, path, damaged)


# -- flags -----------------------------------------------------------------------------------------
def _not_a_number(text: str) -> bool:
    try:
        float(text)
        return False
    except ValueError:
        return True


WORDS = st.text(min_size=0, max_size=40).filter(_not_a_number)


def whole_outside(low: int, high: int):
    return st.one_of(st.integers(max_value=low - 1, min_value=low - 10**30).map(str),
                     st.integers(min_value=high + 1, max_value=high + 10**40).map(str), WORDS,
                     st.sampled_from(["1.5", "1e3", "nan", "inf", "0x10", ""]))


def real_outside(low: float, high: float, low_open: bool = True):
    below = st.floats(max_value=low, allow_nan=False) if low_open else st.floats(max_value=low, exclude_max=True, allow_nan=False)
    return st.one_of(below.map(repr), st.floats(min_value=high, exclude_min=True).map(repr), WORDS,
                     st.sampled_from(["nan", "inf", "-inf", "1e309", "1e-400"]))


DEVICES = st.one_of(st.sampled_from(["meta", "xla", "xpu", "cuda:99", "cpu:1", "mps", "gpu", "", "[/]", "cuda:-1", "cuda:x"]),
                    WORDS).filter(lambda d: d not in ("auto", "cpu") and not (torch.cuda.is_available() and d.startswith("cuda"))
                                  and not (d == "mps" and torch.backends.mps.is_available()))

TRAIN_FLAGS = {
    "--steps": whole_outside(0, LIMITS["--steps"]), "--meta-batch": whole_outside(1, LIMITS["--meta-batch"]),
    "--shots": whole_outside(1, LIMITS["--shots"]), "--query": whole_outside(1, LIMITS["--query"]),
    "--inner-steps": whole_outside(0, LIMITS["--inner-steps"]), "--seed": whole_outside(0, LIMITS["--seed"]),
    "--log-every": whole_outside(1, LIMITS["log_every"]), "--checkpoint-every": whole_outside(1, LIMITS["checkpoint_every"]),
    "--threads": whole_outside(1, 1_024), "--inner-lr": real_outside(0.0, LIMITS["--inner-lr"]),
    "--outer-lr": real_outside(0.0, LIMITS["--outer-lr"]), "--device": DEVICES,
    "--hidden": st.one_of(WORDS.filter(lambda t: t.strip() not in ("", "none", "0")), st.sampled_from(["100000", "-1", "40,0", ",", "1x" * 70])),
    "--task": WORDS, "--algo": WORDS, "--activation": WORDS, "--init": WORDS, "--backend": WORDS,
    "--option": st.one_of(WORDS.filter(lambda t: "=" not in t), st.sampled_from(["x=1", "=3", "context_size=-1"])),
}
EVAL_FLAGS = {
    "--shots": whole_outside(1, 100_000), "--steps": whole_outside(0, 1_000), "--tasks": whole_outside(1, 1_000_000),
    "--query": whole_outside(1, 100_000), "--seed": whole_outside(0, 2**63 - 1), "--inner-lr": real_outside(0.0, 1e6),
    "--device": DEVICES,
}
BENCH_FLAGS = {
    "--seconds": real_outside(0.05, 3600.0, low_open=False), "--meta-batch": whole_outside(1, 10_000), "--device": DEVICES,
    # bench --cost's grid: lists with a value out of range, not a number, empty, or a name that is no algorithm
    "--cost-steps": st.one_of(st.builds(lambda v: f"1,{v}", whole_outside(1, 1_000)), st.sampled_from(["", ",", "1,,2", "x", "5;10"])),
    "--cost-algorithms": st.one_of(WORDS.filter(lambda t: t.strip() not in ("maml", "fomaml", "reptile", "imaml", "hfmaml")),
                                   st.sampled_from(["protonet", "scratch", "maml,", "maml,nope"])),
}
COST_FLAGS = {"--cost-steps", "--cost-algorithms"}
NAMES = {"--task", "--algo", "--activation", "--init", "--backend"}


def assert_one_sentence(result) -> None:
    assert result.exit_code not in (0, None), (result.exit_code, result.stdout)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = result.stderr
    assert "Traceback" not in text + result.stdout, text
    if result.exit_code == 1:  # ours: one line, "error: ..."
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), text
    else:  # the parser's own refusal of a value that is not of the flag's type
        assert result.exit_code == 2 and ("Invalid value" in text or "requires an argument" in text or "No such option" in text), text


@FUZZ
@given(data=st.data())
def test_train_flags_out_of_their_limits_are_refused_before_any_work(tmp_path_factory, data):
    flag = data.draw(st.sampled_from(sorted(TRAIN_FLAGS)), label="flag")
    value = data.draw(TRAIN_FLAGS[flag], label="value")
    if flag in NAMES and value in ("sinusoid", "maml", "relu", "torch", "auto") or (flag == "--task" and value in ("linear", "quadratic", "sine_line", "harmonic", "tanh", "abs")):
        value += "!"  # a real name is not hostile
    out = tmp_path_factory.mktemp("train") / "run"
    arguments = ["train", "--steps", "1", "--out", str(out), flag, value]
    result = CliRunner().invoke(app, arguments)
    assert_one_sentence(result)
    assert not out.exists() or not any(out.iterdir())  # refused before any file was written


@FUZZ
@given(data=st.data())
def test_resume_with_hostile_flags_leaves_the_run_as_it_was(good_run, data):
    flag = data.draw(st.sampled_from(["--steps", "--threads", "--device", "--backend"]), label="flag")
    value = data.draw(TRAIN_FLAGS[flag] if flag != "--steps" else st.one_of(TRAIN_FLAGS[flag], st.integers(0, 20).map(str)), label="value")
    before = digest(good_run)
    result = CliRunner().invoke(app, ["train", "--resume", str(good_run), flag, value])
    assert_one_sentence(result)
    assert digest(good_run) == before


@FUZZ
@given(data=st.data())
def test_eval_and_bench_flags_out_of_their_limits_are_refused(good_run, tmp_path_factory, data):
    command = data.draw(st.sampled_from(["eval", "bench"]), label="command")
    table = EVAL_FLAGS if command == "eval" else BENCH_FLAGS
    flag = data.draw(st.sampled_from(sorted(table)), label="flag")
    value = data.draw(table[flag], label="value")
    before = digest(good_run)
    arguments = ["eval", str(good_run), "--tasks", "2"] if command == "eval" else ["bench", "--seconds", "0.05"]
    if flag in COST_FLAGS:
        arguments.append("--cost")  # refused for the value, not for a missing --cost
    result = CliRunner().invoke(app, [*arguments, flag, value])
    assert_one_sentence(result)
    assert digest(good_run) == before


@FUZZ
@given(data=st.data())
def test_hostile_paths_get_one_sentence(good_run, tmp_path_factory, data):
    """Paths that cannot be what the flag needs: too long, under a file, not there, empty, markup."""
    place = tmp_path_factory.mktemp("paths")
    (place / "a-file").write_text("x")
    name = data.draw(st.one_of(st.sampled_from(["x" * 300, "x" * 5000, "a-file/run", "missing/deeper", "[/]", "[bold]x"]),
                               st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t and "/" not in t and t not in (".", ".."))),
                     label="name")
    path = str(place / name)
    command = data.draw(st.sampled_from(["resume", "eval", "out-under-a-file", "bench-out"]), label="command")
    if command == "resume":
        arguments = ["train", "--resume", path]
    elif command == "eval":
        arguments = ["eval", path]
    elif command == "bench-out":
        arguments = ["bench", "--seconds", "0.05", "--meta-batch", "1", "--out", str(place / "a-file" / name)]
    else:
        arguments = ["train", "--steps", "1", "--out", str(place / "a-file" / name)]
    before = digest(good_run)
    result = CliRunner().invoke(app, arguments)
    assert_one_sentence(result)
    assert (place / "a-file").read_text() == "x" and digest(good_run) == before
