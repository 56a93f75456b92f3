"""The ``maml-tui`` command's entry point: a first frame at once, then the real program.

Python, typer and Textual take most of a second to import on a small machine, and a terminal that
stays blank that long looks broken. When the command opens the explorer (no command, or
``explore``) on a terminal, this module first paints a plain frame with nothing but the standard
library: the panels' outlines, the run's own settings and outer step read from its
``preview.json`` or ``config.json``, and "starting". Textual then takes the screen over and draws
the real thing. Every other command goes straight to the typer CLI.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SHIPPED_RUN = Path(__file__).resolve().parent / "data" / "sinusoid-maml"
LABELS = (("task", "task"), ("algorithm", "algorithm"), ("hidden", "model"), ("shots", "shots"),
          ("inner_lr", "inner lr"), ("inner_steps", "inner steps"), ("meta_batch_size", "meta-batch"), ("seed", "seed"))


def explorer_target(argv: list[str]) -> Path | None | bool:
    """The run the explorer would open for these arguments (``None``: a new model), or False when
    they do not simply open the explorer (another command, help, or anything unusual)."""
    args = list(argv)
    run: Path | None = SHIPPED_RUN
    if args and args[0] == "explore":
        args = args[1:]
        if args and not args[0].startswith("-"):
            run = Path(args.pop(0))
    while args:
        flag = args.pop(0)
        if flag in ("--ascii", "--present") or flag.startswith("--device="):
            continue
        if flag == "--device" and args:
            args.pop(0)
            continue
        return False
    return run if run is None or _is(run.exists) else False


def _is(question) -> bool:
    """A path question (``path.exists``, ``path.is_dir``) that is False, not an error, for a path no
    file system can hold (a name too long, a NUL byte): the command itself then says what is wrong."""
    try:
        return bool(question())
    except (OSError, ValueError):
        return False


def settings_of(run: Path) -> tuple[dict, int | None]:
    """The run's explorer settings and outer step, from its plain files (no torch)."""
    try:
        snapshot = json.loads((run / "preview.json").read_text())["snapshot"]
        return dict(snapshot["settings"]), int(snapshot["step"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        config = json.loads((run / "config.json").read_text())["config"]
        settings = {"task": config["task"]["name"], "algorithm": config["algo"]["name"],
                    "hidden": ",".join(str(h) for h in config["model"]["hidden"]), "shots": config["train"]["shots"],
                    "inner_lr": config["algo"].get("inner_lr"), "inner_steps": config["algo"].get("inner_steps"),
                    "meta_batch_size": config["train"]["meta_batch_size"], "seed": config["train"]["seed"]}
        return settings, None
    except (OSError, ValueError, KeyError, TypeError):
        return {}, None


def frame(run: Path | None, columns: int, lines: int) -> str:
    """The plain first frame, as the text to write (cursor moves included)."""
    settings, step = settings_of(run) if run is not None and run.is_dir() else ({}, None)
    side = 32
    right = max(columns - side, 10)
    rows = [""] * lines
    top = "╭─ settings " + "─" * (side - 13) + "╮"
    rows[0] = top + "╭─ fit " + "─" * (right - 8) + "╮"
    body = []
    for key, label in LABELS:
        value = settings.get(key, "…")
        value = f"{value:g}" if isinstance(value, float) else str(value if value is not None else "…")
        body.append(f"│ {label:<12}{value[:side - 16]:<{side - 15}}│")
    for index in range(1, lines - 2):
        left = body[index - 1] if index - 1 < len(body) else ("╰" + "─" * (side - 2) + "╯" if index - 1 == len(body) else " " * side)
        rows[index] = left + "│" + " " * (right - 2) + "│"
    name = "a new model" if run is None else ("the shipped MAML run" if run == SHIPPED_RUN else run.name)
    import textwrap

    message = textwrap.wrap(f"opening {name}: starting the interface and the engine…", max(right - 4, 6))
    middle = max(1, (lines - 2) // 2 - len(message) // 2)
    for offset, text in enumerate(message[: max(lines - 4 - middle, 1)]):
        rows[middle + offset] = rows[middle + offset][: side + 1] + text.center(right - 2) + "│"
    rows[lines - 3] = rows[lines - 3][:side] + "╰" + "─" * (right - 2) + "╯"
    rows[lines - 2] = (" …  " + (f"step {step:,} · " if step is not None else "") + "starting engine…")[:columns]
    rows[lines - 1] = " ? help q quit"
    return "\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J" + "\r\n".join(row[:columns] for row in rows)


def paint(run: Path | None) -> bool:
    """Write the first frame to the terminal (the alternate screen Textual will take over)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except OSError:
        return False
    if size.columns < 80 or size.lines < 24:
        return False  # the explorer will say the terminal is too small
    sys.stdout.write(frame(run, size.columns, size.lines))
    sys.stdout.flush()
    return True


def _interrupted(signum, frame) -> None:
    """Ctrl-C before a command has its own handler (while torch imports, while a run is set up):
    one sentence and exit 130. Training installs its own, which stops at a step boundary."""
    resume = _resume_hint(sys.argv[1:])
    started = _half_made(sys.argv[1:])
    if resume:
        text = f"Interrupted; resume with: maml-tui train --resume {resume}"
    elif started:
        text = f"Interrupted while the run was being set up; {started} holds no checkpoint yet: remove it and start again"
    else:
        text = "Interrupted; nothing was written"
    sys.stderr.write(f"\n{text}\n")
    sys.stderr.flush()
    os._exit(130)  # from a signal handler, past anything that would catch SystemExit and print more


def main() -> None:
    import signal

    if threading_main():
        signal.signal(signal.SIGINT, _interrupted)
    try:
        _main()
    except KeyboardInterrupt:  # Ctrl-C while starting up (importing torch), or a second one: one sentence
        resume = _resume_hint(sys.argv[1:])
        sys.stderr.write("\nInterrupted" + (f"; resume with: maml-tui train --resume {resume}" if resume else "") + "\n")
        sys.exit(130)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _half_made(argv: list[str]) -> str:
    """A new run's directory that exists without a checkpoint (Ctrl-C came while it was being set up)."""
    if argv and argv[0] == "train" and "--out" in argv[:-1]:
        target = Path(argv[argv.index("--out") + 1])
        if _is(target.is_dir) and not _is((target / "checkpoint.pt").is_file):
            return str(target)
    return ""


def _resume_hint(argv: list[str]) -> str:
    """The run a ``train`` command line writes, if it names one (for the resume line after Ctrl-C)."""
    if not argv or argv[0] != "train":
        return ""
    for flag in ("--resume", "--out"):
        if flag in argv[:-1]:
            target = argv[argv.index(flag) + 1]
            return target if _is((Path(target) / "checkpoint.pt").is_file) else ""
    return ""


def _main() -> None:
    run = explorer_target(sys.argv[1:])
    painted = run is not False and sys.stdin.isatty() and sys.stdout.isatty() and paint(run)
    try:
        from maml_tui.cli import main as cli_main

        cli_main()
    finally:
        if painted:  # Textual has left the alternate screen already, unless it never started
            sys.stdout.write("\x1b[?25h\x1b[?1049l")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
