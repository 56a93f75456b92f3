"""Start-up of the explorer as a person sees it: first frame, first real picture, engine ready.

Launches ``maml-tui`` (the README's main command, on the shipped run) in a pseudo-terminal of
``--size`` and reads what it draws, from the moment the process is started:

* **first frame**: the first screen with the explorer's panels on it;
* **first real picture**: the first screen that shows the shipped run's own numbers (its outer
  step in the status line), known from its plain files before the engine is up;
* **engine ready**: the first screen on which the engine has answered (the fit's title names the
  task), when keys that need the engine work.

Each launch is a fresh process; the medians of ``--launches`` go to ``--out``:

    python benchmarks/startup.py --launches 5 --out benchmarks/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import select
import signal
import statistics
import struct
import subprocess
import sys
import termios
import fcntl
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKS = {  # what each moment looks like in the terminal's output stream
    "first_frame": b"settings",
    "first_real_picture": b"sinusoid #1",
    "engine_ready": b"paused",
}


STATE: dict[str, str] = {}


def launch(size: tuple[int, int], timeout: float, command: list[str]) -> dict[str, float]:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(size[0]), "LINES": str(size[1]),
           **STATE}  # the user's preferences and autosave stay out of it
    start = time.perf_counter()
    process = subprocess.Popen(command, stdin=child, stdout=child, stderr=child, env=env, close_fds=True,
                               start_new_session=True)
    os.close(child)
    seen: dict[str, float] = {}
    output = b""
    try:
        while len(seen) < len(MARKS) and time.perf_counter() - start < timeout:
            ready, _, _ = select.select([main], [], [], 0.02)
            if ready:
                try:
                    output += os.read(main, 65536)
                except OSError:
                    break
                for name, mark in MARKS.items():
                    if name not in seen and mark in output:
                        seen[name] = time.perf_counter() - start
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        os.close(main)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--size", type=int, nargs=2, default=(120, 40), metavar=("COLUMNS", "LINES"))
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "startup.json")
    args = parser.parse_args()
    import tempfile

    scratch = tempfile.mkdtemp(prefix="maml-tui-startup-")
    STATE.update(MAML_TUI_CONFIG_DIR=f"{scratch}/config", MAML_TUI_STATE_DIR=f"{scratch}/state")
    command = [sys.executable, "-m", "maml_tui"]
    runs = []
    for index in range(args.launches):
        seen = launch(tuple(args.size), args.timeout, command)
        runs.append(seen)
        print(f"launch {index + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in seen.items()), flush=True)
    medians = {name: statistics.median(r[name] for r in runs if name in r) for name in MARKS
               if any(name in r for r in runs)}
    document = {"what": "seconds from launching the explorer on the shipped run to each moment (median of fresh processes)",
                "command": "python benchmarks/startup.py --launches 5", "size": list(args.size), "launches": args.launches,
                "machine": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                "median_seconds": medians, "runs": runs}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print("median: " + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items()))


if __name__ == "__main__":
    main()
