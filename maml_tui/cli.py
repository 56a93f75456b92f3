"""The ``maml-tui`` command: thin typer commands over the engine.

With no command it opens the live explorer. ``train``, ``eval``, ``bench`` and ``info`` are the
headless modes for scripts and GPU boxes. Every command only translates flags into an engine
config and calls one engine function; user errors end in one sentence on stderr and exit code 1.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import registry  # names only: it imports no torch, so --help stays fast

app = typer.Typer(
    name="maml-tui",
    help="A live terminal explorer and a fast engine for MAML and its family.",
    add_completion=False,
    pretty_exceptions_enable=False,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)


def _writable_file(path: Path) -> str:
    """"" when ``path`` can be written as a file, else why not (checked before any work)."""
    if str(path) == "":
        return "is empty"
    if path.is_dir():
        return "is a directory; give a file name"
    parent = path.parent if str(path.parent) else Path(".")
    existing = next((p for p in (parent, *parent.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        return f"cannot be made: {existing} is a file"
    if not os.access(existing, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return "is not writable here"
    return ""


def printable(text: str) -> str:
    """``text`` with control characters (a newline in a path, an escape sequence) written as escapes,
    so user text can neither break the one line nor drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def fail(message: str, code: int = 1) -> None:
    """End the command with one clear sentence on stderr."""
    message = printable(message[0].upper() + message[1:] if message else message)
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # user text (paths, names) is text
    raise typer.Exit(code)


NAME_MAX, PATH_MAX = 255, 4096  # bytes of one path component and of a whole path on Linux and macOS


def check_path(path: Path | None, flag: str, creating: bool = False) -> None:
    """Refuse a path no file system can hold (a component over 255 bytes, 4096 in all, a NUL byte)
    or that cannot even be looked at, before any work; a path to be made must not hold control
    characters either (a newline in a run's name breaks every listing of it). The rest is each
    command's to check."""
    if path is None:
        return
    text = str(path)
    if creating and not text.isprintable():
        fail(f"{flag} {text!r} holds a control character (a newline, a tab, an escape); choose a plain name")
    if "\x00" in text:
        fail(f"{flag} {text!r} holds a NUL character, which no path can")
    longest = max((len(part.encode(errors="surrogateescape")) for part in Path(text).parts), default=0)
    if longest > NAME_MAX or len(text.encode(errors="surrogateescape")) > PATH_MAX:
        fail(f"{flag} names a path longer than a file system allows ({longest} bytes in one name; the most is "
             f"{NAME_MAX}, and {PATH_MAX} in all)")
    try:
        path.exists()
    except OSError as error:
        fail(f"{flag} {text} cannot be looked at: {error.strerror or error}")


TASK_HELP = (f"Task family: regression {', '.join(n for n in registry.TASKS if not registry.is_classification(n))}; "
             f"classification {', '.join(n for n in registry.TASKS if registry.is_classification(n))}.")
MODEL_HELP = f"Model: {', '.join(registry.MODELS)} (conv4 takes images: classification families only)."
ALGO_HELP = f"Algorithm: {', '.join(registry.ALGORITHMS)} (see maml-tui algorithms)."


def _parse_options(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs into an options mapping; values are JSON when they parse (numbers,
    true/false), text otherwise."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--option takes KEY=VALUE, such as context_size=5, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _parse_hidden(text: str) -> tuple[int, ...]:
    text = text.strip()
    if text in ("", "none", "0"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        fail(f"--hidden must be comma-separated layer widths such as 40,40, got {text!r}")
    if any(size < 1 for size in sizes):
        fail(f"--hidden widths must be positive, got {text!r}")
    return sizes


# -- explorer ------------------------------------------------------------------------------------
@app.callback()
def root(
    ctx: typer.Context,
    ascii_mode: Annotated[bool, typer.Option("--ascii", help="Draw plots without braille (for fonts that lack it).")] = False,
    present: Annotated[bool, typer.Option("--present", help="Presenter mode: heavier markers, high contrast, readable in monochrome.")] = False,
    device: Annotated[str, typer.Option(help="Engine device: auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """With no command, open the live explorer."""
    if ctx.invoked_subcommand is not None and (ascii_mode or present or device != "auto"):
        fail(f"--device, --ascii and --present go after the command, e.g. maml-tui {ctx.invoked_subcommand} --device cpu")
    if ctx.invoked_subcommand is None:
        _run_explorer(None, ascii_mode, device, present)


@app.command()
def explore(
    run: Annotated[Optional[Path], typer.Argument(help="Run directory (or checkpoint file) to open.")] = None,
    ascii_mode: Annotated[bool, typer.Option("--ascii", help="Draw plots without braille (for fonts that lack it).")] = False,
    present: Annotated[bool, typer.Option("--present", help="Presenter mode: heavier markers, high contrast, readable in monochrome.")] = False,
    device: Annotated[str, typer.Option(help="Engine device: auto, cpu, cuda, cuda:N or mps.")] = "auto",
) -> None:
    """Open the live explorer, optionally on a run directory's checkpoint."""
    _run_explorer(run, ascii_mode, device, present)


def _run_explorer(run: Path | None, ascii_mode: bool, device: str, present: bool = False) -> None:
    check_path(run, "the run")  # what is wrong with the input first, then whether it can be shown here
    if run is not None and not run.exists():
        fail(f"{run} does not exist")
    import re

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", device):  # torch-free; the engine checks it is there
        fail(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        fail("the explorer needs an interactive terminal (a TTY); use 'maml-tui train' or 'maml-tui eval' for headless runs")
    from maml_tui.app import run_explorer

    code = run_explorer(run=run, ascii_mode=ascii_mode, device=device, present=present)
    if code:
        raise typer.Exit(code)


# -- train ---------------------------------------------------------------------------------------
@app.command()
def train(
    task: Annotated[str, typer.Option(help=TASK_HELP)] = "sinusoid",
    algo: Annotated[str, typer.Option(help=ALGO_HELP)] = "maml",
    steps: Annotated[Optional[int], typer.Option(help="Outer steps in total, 0 to 10^12 (default: 70000; with --resume, the run's own; a target at or below the step reached is refused).")] = None,
    meta_batch: Annotated[int, typer.Option(help="Tasks per meta-batch, 1 to 100,000 (and what fits in memory: a run that would not is refused with its estimate).")] = 25,
    shots: Annotated[int, typer.Option(help="Support points per task (K; per class for classification), 1 to 100,000.")] = 10,
    query: Annotated[int, typer.Option(help="Query points per task (per class for classification), 1 to 100,000.")] = 10,
    inner_steps: Annotated[Optional[int], typer.Option(help="Inner gradient steps during meta-training, 0 to 1,000 (default: the algorithm's own; see maml-tui algorithms).")] = None,
    inner_lr: Annotated[Optional[float], typer.Option(help="Inner learning rate alpha, finite, above 0 and at most 10^6 (default: the algorithm's own, 0.001 for maml; see maml-tui algorithms).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-O", help="An algorithm option as KEY=VALUE, e.g. context_size=8 (repeatable; see maml-tui algorithms).")] = None,
    outer_lr: Annotated[float, typer.Option(help="Outer Adam learning rate (beta), finite, above 0 and at most 1,000.")] = 1e-3,
    ways: Annotated[Optional[int], typer.Option(help="Classes per episode (N) of a classification family such as digits, 2 up to the classes of its smallest split (default: 5).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the omniglot family's archives are unpacked (default: $MAML_TUI_DATA_DIR/omniglot or ~/.cache/maml-tui/omniglot; see maml-tui download).")] = None,
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "mlp",
    hidden: Annotated[Optional[str], typer.Option(help="Hidden layer widths (mlp) or block channels (conv4), comma-separated: at most 64 layers of 1 to 65,536 ('' or none: a linear mlp). Default: 40,40 for mlp, 64,64,64,64 for conv4.")] = None,
    activation: Annotated[str, typer.Option(help="Activation: relu, tanh, sigmoid, gelu, silu.")] = "relu",
    init: Annotated[str, typer.Option(help="Initialisation: torch (nn.Linear default) or finn (MAML reference code).")] = "torch",
    seed: Annotated[int, typer.Option(help="Seed for initialisation and task sampling, 0 to 2^63 - 1.")] = 0,
    device: Annotated[str, typer.Option(help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch, 1 to 1,024 (default: 1 for small workloads, where it is fastest).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory to create: a new or empty directory, names of at most 255 bytes without control characters (default: runs/TASK-ALGO-TIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run directory exactly where it stopped (refused while another process writes it).")] = None,
    log_every: Annotated[int, typer.Option(help="Outer steps between metric records, 1 to 10^12.")] = 100,
    checkpoint_every: Annotated[int, typer.Option(help="Outer steps between periodic checkpoints, 1 to 10^12 (each is checked before it replaces the last good one).")] = 5000,
    backend: Annotated[str, typer.Option(help="auto (the fastest that supports the run), fused, lowrank, closed_form or torch.func.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; print only the run directory.")] = False,
) -> None:
    """Meta-train a model headless and write a run directory (config, metrics, checkpoint)."""
    from engine.checkpoint import RunError
    from engine.config import AlgoConfig, ModelConfig, RunConfig, TaskConfig, TrainConfig
    from engine.trainer import DivergedError, resolve_device, train as run_training

    check_path(out, "--out", creating=True)
    check_path(resume, "--resume")
    if steps is not None and steps < 0:
        fail(f"--steps must not be negative, got {steps}")
    if threads is not None and not 1 <= threads <= 1_024:
        fail(f"--threads must be between 1 and 1,024, got {threads:,}")
    try:
        resolve_device(device)
        from engine.backends import check_name

        check_name(backend)
    except ValueError as error:
        fail(str(error))
    if resume is not None:
        from engine.checkpoint import RunDirectory

        ignored = [flag for flag, value in (
            ("--task", task != "sinusoid"), ("--algo", algo != "maml"), ("--meta-batch", meta_batch != 25),
            ("--shots", shots != 10), ("--query", query != 10), ("--inner-steps", inner_steps is not None),
            ("--inner-lr", inner_lr is not None), ("--option", bool(option)), ("--outer-lr", outer_lr != 1e-3),
            ("--hidden", hidden is not None), ("--ways", ways is not None), ("--model", model != "mlp"),
            ("--data-dir", data_dir is not None),
            ("--activation", activation != "relu"), ("--init", init != "torch"), ("--seed", seed != 0),
            ("--out", out is not None), ("--log-every", log_every != 100), ("--checkpoint-every", checkpoint_every != 5000),
        ) if value]
        if ignored:
            fail(f"--resume continues a run with its own settings, so {', '.join(ignored)} cannot change; "
                 "only --steps, --device, --threads, --backend and --quiet apply")
        try:
            RunDirectory(resume).load_config()
            RunDirectory(resume).load_checkpoint()
        except RunError as error:
            fail(str(error))
    if resume is not None:
        run_dir, config = resume, None
    else:
        if ways is not None and not registry.is_classification(task):
            fail(f"--ways sets the classes of a classification episode, and task family {task} is regression; "
                 f"the classification families are {', '.join(n for n in registry.TASKS if registry.is_classification(n))}")
        if data_dir is not None and task != "omniglot":
            fail(f"--data-dir tells the omniglot family where its data is; task family {task} needs none")
        check_path(data_dir, "--data-dir")
        widths = _parse_hidden(hidden) if hidden is not None else ((64, 64, 64, 64) if model == "conv4" else (40, 40))
        settings = {} if ways is None else {"ways": ways}
        if data_dir is not None:
            settings["data_dir"] = str(data_dir.expanduser().resolve())
        config = RunConfig(
            task=TaskConfig(name=task, ranges=settings),
            model=ModelConfig(kind=model, hidden=widths, activation=activation, init=init),
            algo=AlgoConfig(name=algo, inner_lr=inner_lr, inner_steps=inner_steps, options=_parse_options(option)),
            train=TrainConfig(
                steps=70_000 if steps is None else steps, meta_batch_size=meta_batch, shots=shots, query=query,
                outer_lr=outer_lr, seed=seed, log_every=log_every, checkpoint_every=checkpoint_every,
            ),
        )
        try:
            config = config.validate().resolved()
        except ValueError as error:
            fail(str(error))
        if registry.is_classification(config.task.name):  # the data and the episode sizes, before any directory is made
            from engine.tasks import make_task_family

            try:
                make_task_family(config.task.name, **config.task.ranges).check_episode(config.train.shots, config.train.query)
            except ValueError as error:
                fail(str(error))
        if out is not None and str(out).strip() in ("", "."):
            fail("--out must name a run directory (it was empty)")
        run_dir = out or Path("runs") / f"{task}-{algo}-{time.strftime('%Y%m%d-%H%M%S')}"
        from engine.checkpoint import RunDirectory

        try:
            RunDirectory(run_dir).check_creatable()
            run_dir.mkdir(parents=True, exist_ok=True)
        except RunError as error:
            fail(str(error))
        except OSError as error:
            fail(f"cannot write the run directory {run_dir}: {error.strerror or error}")

    from maml_tui.progress import TrainProgress

    progress = TrainProgress(console, quiet=quiet)
    try:
        with progress:
            end = run_training(config, run_dir, device=device, threads=threads, resume=resume is not None,
                               steps=steps, on_event=progress.on_event, backend=backend)
    except DivergedError as error:
        fail(str(error))
    except (RunError, ValueError) as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot write the run directory {run_dir}: {error.strerror or error}")
    if quiet:
        typer.echo(str(run_dir))  # for scripts: the path alone, never wrapped or styled
    else:
        console.print(f"{escape(end.message)}: step {end.step:,} of {end.total:,}. Run directory: [bold]{escape(str(run_dir))}[/]")
    if end.message == "interrupted":
        errors.print(f"Interrupted; resume with: maml-tui train --resume {escape(str(run_dir))}", highlight=False)
        raise typer.Exit(130)


# -- eval ----------------------------------------------------------------------------------------
@app.command("eval")
def evaluate_runs(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (or checkpoint files) to evaluate.")],
    shots: Annotated[Optional[int], typer.Option(help="Support points per test task (K; per class for classification), 1 to 100,000 (default: 5; classification: the run's own).")] = None,
    steps: Annotated[int, typer.Option(help="Evaluate after 0..STEPS inner steps, STEPS from 0 to 1,000.")] = 10,
    tasks: Annotated[int, typer.Option(help="Fresh test tasks (episodes of the meta-test classes for classification), 1 to 1,000,000.")] = 600,
    query: Annotated[Optional[int], typer.Option(help="Query points per test task, 1 to 100,000 (default: 100; classification: 15 per class).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the test tasks, 0 to 2^63 - 1.")] = 12345,
    inner_lr: Annotated[Optional[float], typer.Option(help="Inner learning rate, finite, above 0 and at most 10^6 (default: each run's own).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")] = False,
) -> None:
    """Meta-test runs with the paper protocol: per inner step the mean with its 95% CI, the median
    and how many tasks diverged (mean, CI and median over the tasks that did not)."""
    from engine.checkpoint import RunError
    from engine.evaluate import evaluate
    from engine.trainer import MetaLearner, resolve_device

    for run in runs:
        check_path(run, "the run")
    for flag, value, most in (("--shots", shots, 100_000), ("--tasks", tasks, 1_000_000), ("--query", query, 100_000)):
        if value is not None and not 1 <= value <= most:
            fail(f"{flag} must be between 1 and {most:,}, got {value:,}")
    if not 0 <= steps <= 1_000:
        fail(f"--steps must be between 0 and 1,000, got {steps:,}")
    if not 0 <= seed < 2**63:
        fail(f"--seed must be between 0 and 2**63 - 1, got {seed}")
    if inner_lr is not None and not (math.isfinite(inner_lr) and 0 < inner_lr <= 1e6):
        fail(f"--inner-lr must be a finite positive number up to 1e6, got {inner_lr}")
    try:
        target = resolve_device(device)
    except ValueError as error:
        fail(str(error))
    results = []
    for run in runs:
        try:
            learner = MetaLearner.from_run(run, target)
        except (RunError, ValueError) as error:
            fail(str(error))
        classifies = registry.is_classification(learner.config.task.name)
        if results and classifies != (results[0][1].loss == "cross_entropy"):
            fail("the runs mix regression and classification; evaluate them apart")
        run_shots = shots if shots is not None else (learner.config.train.shots if classifies else 5)
        run_query = query if query is not None else (15 if classifies else 100)
        try:
            result = evaluate(learner.algorithm, learner.parameters(), learner.family, shots=run_shots, steps=steps,
                              tasks=tasks, query=run_query, seed=seed, inner_lr=inner_lr)
        except ValueError as error:
            fail(str(error))
        results.append((str(run), result))
    if as_json:
        document = {"runs": [{"run": run, **result.to_dict()} for run, result in results]}
        typer.echo(json.dumps(document, allow_nan=False))  # strict JSON: every number is finite or null
        return
    first = results[0][1]
    classifies = first.loss == "cross_entropy"
    label = first.loss.upper() if first.loss == "mse" else first.loss
    if classifies:
        title = (f"Meta-test accuracy and {label} ({tasks} episodes of the meta-test classes, {first.ways}-way "
                 f"{first.shots}-shot, {first.query} query images per class): mean ± 95% CI, median loss, episodes diverged")
    else:
        title = (f"Meta-test {label} ({tasks} tasks, {first.shots} shots, {first.query} query points): "
                 "mean ± 95% CI, median, tasks diverged")
    table = Table(title=escape(title), title_justify="left")
    table.add_column("step", justify="right")
    for run, result in results:
        name = escape(f"{Path(run).name}\n{result.algorithm}, lr {result.inner_lr:g}")
        if classifies:
            table.add_column(f"{name}\naccuracy %", justify="right")
        table.add_column("loss\nmean ± CI" if classifies else f"{name}\nmean ± CI", justify="right")
        table.add_column("median", justify="right")
        table.add_column("div.", justify="right")
    for index in range(steps + 1):
        cells = []
        for _, result in results:
            stats = result.step(index)
            if classifies:
                mean, ci = result.metrics["accuracy"][index], result.metrics_ci95["accuracy"][index]
                cells.append("—" if mean is None else f"{100 * mean:.1f} ± {100 * ci:.1f}")
            cells += ["—" if stats.mean is None else f"{stats.mean:.3f} ± {stats.ci95:.3f}",
                      "—" if stats.median is None else f"{stats.median:.3f}", str(stats.diverged)]
        table.add_row(str(index), *cells)
    console.print(table)
    if any(any(result.diverged) for _, result in results):
        console.print(escape(f"A task counts as diverged when {results[0][1].diverged_rule}."), highlight=False)


# -- bench ---------------------------------------------------------------------------------------
@app.command()
def bench(
    seconds: Annotated[Optional[float], typer.Option(help="Seconds to time each implementation on each case (each cell with --cost), 0.05 to 3,600 (3 by default; 1 with --cost).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    meta_batch: Annotated[int, typer.Option(help="Tasks per meta-batch, 1 to 10,000.")] = 25,
    out: Annotated[Optional[Path], typer.Option(help="Also write the results as JSON to this file (a writable file, not a directory).")] = None,
    cost: Annotated[bool, typer.Option("--cost", help="Measure time per meta-iteration and the memory of one meta-gradient against inner steps, per algorithm, instead.")] = False,
    cost_steps: Annotated[Optional[str], typer.Option(help="With --cost: inner step counts, comma-separated, each 1 to 1,000 (by default 1,5,10,20,50,100).")] = None,
    cost_algorithms: Annotated[Optional[str], typer.Option(help="With --cost: algorithms, comma-separated (by default maml,fomaml,reptile,imaml,hfmaml).")] = None,
) -> None:
    """Meta-iterations per second: the engine against the plain per-task loop, side by side; with
    --cost, time and memory against inner steps for MAML and its cheaper relatives."""
    import platform

    import torch

    from engine.benchmark import run_benchmark
    from engine.trainer import resolve_device

    if seconds is None:
        seconds = 1.0 if cost else 3.0
    if not (math.isfinite(seconds) and 0.05 <= seconds <= 3600):
        fail(f"--seconds must be between 0.05 and 3600, got {seconds}")
    if not 1 <= meta_batch <= 10_000:
        fail(f"--meta-batch must be between 1 and 10,000, got {meta_batch:,}")
    check_path(out, "--out", creating=True)
    if out is not None:
        problem = _writable_file(out)
        if problem:
            fail(f"--out {out} {problem}")
    if not cost and (cost_steps is not None or cost_algorithms is not None):
        fail("--cost-steps and --cost-algorithms go with --cost")
    if cost:
        steps, algorithms = _cost_grid(cost_steps, cost_algorithms)
    try:
        target = resolve_device(device)
    except ValueError as error:
        fail(str(error))
    if cost:
        _bench_cost(steps, algorithms, seconds, target, meta_batch, out)
        return
    with console.status("timing the engine and the plain loop..."):
        results = run_benchmark(seconds=seconds, device=str(target), meta_batch_size=meta_batch)
    from engine.backends import BACKENDS

    table = Table(title=f"meta-iterations per second on {target} (sinusoid, 1-40-40-1, meta-batch {meta_batch}, 10 shots)",
                  title_justify="left")
    for column in ("case", "implementation", "meta-it/s", "vs plain loop"):
        table.add_column(column, justify="left" if column in ("case", "implementation") else "right")
    for r in results:
        rows = [(f"engine, auto ({r.backend})", r.engine_its)]
        rows += [(f"engine, {name}", r.backends[name]) if name in r.backends else (f"engine, {name}", None) for name in BACKENDS]
        rows.append(("plain per-task loop", r.loop_its))
        for index, (label, its) in enumerate(rows):
            table.add_row(r.label if index == 0 else "", label, "refuses" if its is None else f"{its:,.1f}",
                          "" if its is None else f"{its / r.loop_its:.1f}x", end_section=index == len(rows) - 1)
    console.print(table)
    console.print(f"engine threads: {results[0].engine_threads}; plain loop: best of {results[0].loop_threads_tried} threads "
                  f"(took {results[0].loop_threads}). torch {torch.__version__}, {platform.processor() or platform.machine()}")
    if out is not None:
        document = {"device": str(target), "device_name": torch.cuda.get_device_name(target) if target.type == "cuda" else platform.processor() or platform.machine(),
                    "torch": torch.__version__, "meta_batch": meta_batch, "seconds": seconds,
                    "cases": [r.to_dict() for r in results]}
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(document, indent=2) + "\n")
        except OSError as error:
            fail(f"cannot write --out {out}: {error.strerror or error}")


def _cost_grid(cost_steps: str | None, cost_algorithms: str | None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The --cost grid from its two flags, or one sentence saying what is wrong."""
    from engine import cost as engine_cost  # torch is imported already

    steps = engine_cost.STEPS
    if cost_steps is not None:
        parts = [part.strip() for part in cost_steps.split(",")]
        if not all(part.isdigit() and 1 <= int(part) <= engine_cost.MAX_STEPS for part in parts):
            fail(f"--cost-steps must be comma-separated whole numbers from 1 to {engine_cost.MAX_STEPS:,}, got {cost_steps!r}")
        steps = tuple(dict.fromkeys(int(part) for part in parts))
    algorithms = engine_cost.ALGORITHMS
    if cost_algorithms is not None:
        names = [part.strip() for part in cost_algorithms.split(",")]
        choices = [n for n in registry.regression_algorithms() if registry.ALGORITHMS[n].load().trainable]
        unknown = next((n for n in names if n not in choices), None)
        if unknown is not None:
            fail(f"--cost-algorithms takes comma-separated names from {', '.join(choices)}; {unknown!r} is not one")
        algorithms = tuple(dict.fromkeys(names))
    return steps, algorithms


def _cpu_name() -> str:
    """The CPU's model name where Linux tells it, else the architecture."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.partition(':')[2].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cost_plot(steps, peaks: dict[str, list[int]], width: int = 100) -> str:
    """The peak memory of each algorithm against inner steps, log-log, as plain text: one letter per
    algorithm marks its line (no colour, so it reads the same in a terminal, a log and the README)."""
    import re

    import plotext

    plotext.clear_figure()
    plotext.plot_size(width, 22)
    plotext.theme("clear")
    used, values = set(), []
    for algorithm, series in peaks.items():
        marker = next((c.upper() for c in algorithm if c.isalpha() and c.upper() not in used), "*")
        used.add(marker)
        mib = [max(b, 1) / 2**20 for b in series]
        values += mib
        plotext.plot(list(steps), mib, label=algorithm, marker=marker)
    if len(steps) > 1:
        plotext.xscale("log")
    plotext.yscale("log")
    plotext.xticks(list(steps), [str(c) for c in steps])
    low, high = min(values), max(values)
    ticks = [m * 10.0**e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1) for m in (1, 2, 5)]
    ticks = [t for t in ticks if low * 0.95 <= t <= high * 1.05]
    if len(ticks) < 2:
        ticks = sorted({float(f"{low:.2g}"), float(f"{high:.2g}")})
    plotext.yticks(ticks, [f"{t:g}" for t in ticks])
    plotext.title("peak MiB of one meta-gradient against inner steps (log-log)")
    plotext.xlabel("inner steps")
    text = re.sub(r"\x1b\[[0-9;]*m", "", plotext.build())
    plotext.clear_figure()
    return "\n".join(line.rstrip() for line in text.splitlines())


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.2f}"


def _bench_cost(steps, algorithms, seconds: float, target, meta_batch: int, out: Path | None) -> None:
    """``bench --cost``: render what ``engine.cost.run_cost`` measures (a table, a plot, the JSON)."""
    import platform

    import plotext
    import torch

    from engine.cost import run_cost

    with console.status("measuring...") as status:
        cells = run_cost(steps, algorithms, seconds=seconds, device=str(target), meta_batch_size=meta_batch,
                         progress=lambda name, count: status.update(f"measuring {name}, {count} inner steps..."))
    by = {(c.algorithm, c.inner_steps): c for c in cells}
    on_cuda = target.type == "cuda"
    name = torch.cuda.get_device_name(target) if on_cuda else _cpu_name()
    console.print(f"ms per meta-iteration / peak MiB of one meta-gradient on {target} "
                  f"(sinusoid, MLP 1-40-40-1, meta-batch {meta_batch}, 10 shots, backend auto)", highlight=False)
    table = Table()
    table.add_column("algorithm", justify="left")
    for count in steps:
        table.add_column(f"{count} step{'s' if count != 1 else ''}", justify="right")
    for algorithm in algorithms:
        row = []
        for count in steps:
            cell = by[(algorithm, count)]
            text = f"{cell.ms_per_meta_it:,.1f} ms\n{_mib(cell.peak_bytes)} MiB"
            if on_cuda:
                text += f"\n{_mib(cell.cuda_peak_bytes)} cuda"
            row.append(text)
        table.add_row(algorithm, *row, end_section=True)
    console.print(table)
    console.print(cost_plot(steps, {a: [by[(a, c)].peak_bytes for c in steps] for a in algorithms}, min(console.width, 100)),
                  markup=False, highlight=False, soft_wrap=True)
    console.print(f"peak: the allocator's peak above the start during one meta_step; time: median outer_step over "
                  f"{seconds:g} s per cell. torch {torch.__version__}, {name}, "
                  f"{'/'.join(str(t) for t in sorted({c.threads for c in cells}))} engine thread(s)",
                  highlight=False)
    if out is not None:
        document = {"command": "maml-tui bench --cost", "device": str(target), "device_name": name,
                    "machine": {"platform": platform.platform(), "processor": _cpu_name(),
                                "cpu_count": os.cpu_count(), "threads": torch.get_num_threads()},
                    "torch": torch.__version__,
                    "protocol": {"task": "sinusoid", "model": "mlp 1-40-40-1 relu", "loss": "mse", "meta_batch": meta_batch,
                                 "shots": 10, "query": 10, "backend": "auto", "seconds_per_cell": seconds},
                    "measures": {"ms_per_meta_it": "median wall time of MetaLearner.outer_step (sampling, meta-gradient, Adam)",
                                 "peak_bytes": "allocator peak above the start during one algorithm.meta_step (torch.profiler memory records)",
                                 "saved_bytes": "peak bytes autograd saved for backward (saved_tensors_hooks); None where torch.func refuses the hooks; the fused backend keeps its tensors on ctx, unseen",
                                 "cuda_peak_bytes": "torch.cuda.max_memory_allocated delta around one meta_step; None off CUDA"},
                    "steps": list(steps), "algorithms": list(algorithms), "cells": [c.to_dict() for c in cells]}
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(document, indent=2) + "\n")
        except OSError as error:
            fail(f"cannot write --out {out}: {error.strerror or error}")


# -- info and algorithms --------------------------------------------------------------------------
@app.command()
def info(
    device: Annotated[str, typer.Option(help="Device to resolve: auto, cpu, cuda, cuda:N or mps.")] = "auto",
    algo: Annotated[str, typer.Option(help=ALGO_HELP)] = "maml",
    inner_steps: Annotated[Optional[int], typer.Option(help="Inner steps, 0 to 1,000 (default: the algorithm's).")] = None,
    shots: Annotated[int, typer.Option(help="Support points per task, 1 to 100,000.")] = 10,
    activation: Annotated[str, typer.Option(help="Activation: relu, tanh, sigmoid, gelu, silu.")] = "relu",
) -> None:
    """Versions, the device and thread count the engine would use, and which backend runs ALGO and why."""
    import os
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from engine.config import AlgoConfig, ModelConfig, RunConfig, TrainConfig
    from engine.trainer import MetaLearner, resolve_device, resolve_threads

    try:
        target = resolve_device(device)
        config = RunConfig(model=ModelConfig(activation=activation), algo=AlgoConfig(name=algo, inner_steps=inner_steps),
                           train=TrainConfig(shots=shots)).validate()
        learner = MetaLearner(config, "cpu", threads=torch.get_num_threads())
    except ValueError as error:
        fail(str(error))
    table = Table(show_header=False, title="maml-tui")
    table.add_column("what", style="bold")
    table.add_column("value")
    for package in ("maml-tui", "torch", "textual", "textual-plotext", "plotext", "rich", "typer"):
        try:
            table.add_row(package, version(package))
        except PackageNotFoundError:
            table.add_row(package, "not installed")
    table.add_row("python", platform.python_version())
    table.add_row("device", str(target))
    table.add_row("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available")
    mps = getattr(torch.backends, "mps", None)
    table.add_row("mps", "available" if mps is not None and mps.is_available() else "not available")
    table.add_row("cpu cores", str(os.cpu_count()))
    table.add_row("torch threads (default)", str(torch.get_num_threads()))
    table.add_row("engine threads (default run)", str(resolve_threads(None, target, RunConfig())))
    console.print(table)
    algorithm = learner.algorithm
    backends = Table(title=f"backends for {algo}: {algorithm.inner_steps} inner step(s), {shots} shots, "
                           f"{learner.model!r}", title_justify="left")
    backends.add_column("backend", style="bold")
    backends.add_column("for this run")
    for name, verdict in algorithm.explain_backends(shots).items():
        backends.add_row(name, verdict)
    console.print(backends)


@app.command()
def download(
    dataset: Annotated[str, typer.Argument(help="The dataset to fetch: omniglot.")],
    data_dir: Annotated[Optional[Path], typer.Option(help="Where to unpack it (default: $MAML_TUI_DATA_DIR/omniglot or ~/.cache/maml-tui/omniglot).")] = None,
) -> None:
    """Fetch a dataset that is not shipped (Omniglot's two archives, about 9 MB, MD5-checked), then read
    it once so the first run starts at once. The digits need no download: scikit-learn ships them."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    if dataset != "omniglot":
        fail(f"the one dataset to download is omniglot (the digits come with scikit-learn), got {printable(dataset)!r}")
    check_path(data_dir, "--data-dir", creating=True)
    from engine import omniglot
    from engine.errors import ConfigError

    root = omniglot.data_dir(data_dir)
    bars: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console) as progress:
        def advance(name: str, done: int, total: int) -> None:
            if name not in bars:
                bars[name] = progress.add_task(f"{name}.zip", total=total or None)
            progress.update(bars[name], completed=done)

        try:
            omniglot.download(root, advance)
        except ConfigError as error:
            fail(str(error))
        except OSError as error:
            fail(f"cannot write {root}: {error.strerror or error}")
    try:
        data = omniglot.load(root)
    except ConfigError as error:
        fail(str(error))
    sizes = ", ".join(f"{len(data.splits[s]):,} {s}" for s in ("train", "val", "test"))
    console.print(f"Omniglot in {escape(str(root))}: {data.images.shape[0]:,} drawings of {data.num_classes // 4:,} characters, "
                  f"{data.num_classes:,} classes with their rotations ({sizes}).", highlight=False)


@app.command()
def algorithms() -> None:
    """Every registered algorithm and task family, with its paper, defaults and options."""
    from engine.algorithms import ALGORITHMS
    from engine.model import MLP

    table = Table(title="algorithms (maml-tui train --algo NAME; options with --option KEY=VALUE)", title_justify="left")
    for column in ("name", "what", "paper", "inner lr", "inner steps", "options (default)", "backend on the sinusoid protocol"):
        table.add_column(column)
    for name, cls in ALGORITHMS.items():
        options = ", ".join(f"{k}={v}" for k, v in cls.option_defaults().items()) or "—"
        if registry.ALGORITHMS[name].kind == "classification":  # no sinusoid run: its own rule on episodes
            from engine.losses import CrossEntropy

            choice = cls(MLP(out_features=5), loss=CrossEntropy()).backend_choice(shots=10) + " (classification only)"
        else:
            choice = cls(MLP()).backend_choice(shots=10)
        table.add_row(name, registry.ALGORITHMS[name].summary, cls.paper, f"{cls.defaults['inner_lr']:g}",
                      str(cls.defaults["inner_steps"]), options, choice)
    console.print(table)
    tasks = Table(title="task families (maml-tui train --task NAME)", title_justify="left")
    tasks.add_column("name")
    tasks.add_column("what")
    for entry in registry.TASKS.values():
        tasks.add_row(entry.name, entry.summary)
    console.print(tasks)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
