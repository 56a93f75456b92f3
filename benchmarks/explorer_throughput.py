"""Meta-training speed with the explorer open and redrawing, against the same training headless.

Two things are compared in one run:

* headless: the shipped sinusoid MAML run stepped by ``MetaLearner.outer_step`` in a process of its
  own (metrics every 100 steps, as ``maml-tui train`` does);
* explorer: the real app (``App.run_test`` at 160x48, plots redrawing) with its real engine process,
  training live after a press of space; meta-it/s from the engine's step counter.

A shared machine's speed drifts by a third from one ten-second window to the next, more than the
difference being measured. So the two are interleaved in short slices (``--slice``, half a second):
both processes stay alive, and the one whose slice it is not is stopped with SIGSTOP. Each side's
rate is its steps over the summed length of its own slices, so a slow minute hurts both alike.
The explorer's interface runs all along (it idles when no snapshot comes). Each round is a fresh
app and a fresh headless process; the share is given per round, and over rounds as mean ± 95% CI.

While the explorer trains, the script also presses a key at the start of every other explorer slice and times the answer: ``?`` (the help
screen opens: the interface's own latency) and ``i`` (an inner step comes back from the engine
process as a new picture: the round trip). Numbers go to ``benchmarks/explorer_throughput.json``.

    python benchmarks/explorer_throughput.py [--seconds 10] [--rounds 5] [--slice 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}  # Student t, 97.5%


def _headless(counter, ready) -> None:
    from engine.trainer import MetaLearner
    from maml_tui.engine_link import SHIPPED_RUN

    learner = MetaLearner.from_run(SHIPPED_RUN, "cpu")
    for _ in range(50):  # warm up
        learner.outer_step(metrics=False)
    ready.set()
    while True:  # stopped and continued from outside; killed at the end
        learner.outer_step(metrics=(learner.step + 1) % 100 == 0)
        counter.value += 1


class Headless:
    """The headless trainer in a process of its own, paused except during its slices."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self.counter, ready = context.RawValue("q", 0), context.Event()
        self.process = context.Process(target=_headless, args=(self.counter, ready), daemon=True)
        self.process.start()
        if not ready.wait(180):
            raise RuntimeError("the headless trainer did not start")
        os.kill(self.process.pid, signal.SIGSTOP)

    def close(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        self.process.join(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def press(app, key: str, character: str | None) -> None:
    """Deliver a key the way the terminal driver does (Pilot.press also waits for the app to go
    idle, up to a second, which would be timed instead of the app)."""
    from textual import events

    event = events.Key(key, character)
    event.set_sender(app)
    app._driver.send_message(event)


async def _wait(condition, what: str, limit: float = 30.0) -> None:
    deadline = time.perf_counter() + limit
    while not condition():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def toggled(app, main, running: bool) -> None:
    """Press space to run or pause and wait for the engine's answer (the screen changes at once;
    the snapshot that answers a pause holds the exact step)."""
    from maml_tui.screens import MainScreen

    if not isinstance(app.screen, MainScreen):
        raise RuntimeError(f"the explorer shows {type(app.screen).__name__}, not its main screen")
    before = main.snapshot
    press(app, "space", " ")
    await _wait(lambda: main.snapshot is not before and main.running == running,
                "the engine to " + ("run" if running else "pause"))


async def measure(seconds: float, slice_seconds: float, size=(160, 48)) -> dict:
    """One round: a fresh app and a fresh headless process, interleaved in slices."""
    from maml_tui.app import ExplorerApp
    from maml_tui.engine_link import EngineLink
    from maml_tui.screens import HelpScreen, MainScreen
    from maml_tui.widgets import FitPlot, LossChart

    alone = Headless()
    for name in ("MAML_TUI_CONFIG_DIR", "MAML_TUI_STATE_DIR"):  # a fresh explorer: no preferences, no autosave
        os.environ[name] = tempfile.mkdtemp(prefix="maml-tui-throughput-")
    app = ExplorerApp(EngineLink(device="cpu"))
    ui_latency, round_trip = [], []
    try:
        async with app.run_test(size=size) as pilot:
            main = app.main
            while main is None or main.snapshot is None or not main.ready:  # the preview is drawn before the engine is up
                await pilot.pause(0.05)
                main = app.main
            engine = app.engine.process.pid
            await toggled(app, main, True)
            await asyncio.sleep(2.0)  # warm up
            await toggled(app, main, False)  # the snapshot that answers the pause holds the exact step
            fit, chart = main.query_one(FitPlot), main.query_one(LossChart)
            start_step, start_count = main.snapshot["step"], alone.counter.value
            ui_cpu, engine_cpu, headless_cpu = time.process_time(), cpu_seconds(engine), cpu_seconds(alone.process.pid)
            fit_renders, chart_renders = fit.renders, chart.renders
            explorer_time = headless_time = 0.0
            slices = 0
            wall = time.perf_counter()
            await toggled(app, main, True)
            explorer_time = time.perf_counter() - wall  # it trains from the press on
            while explorer_time < seconds:
                t0 = time.perf_counter()
                os.kill(engine, signal.SIGCONT)
                slices += 1
                if slices % 4 == 1:  # the interface alone: the help screen opens
                    press(app, "question_mark", "?")
                    await _wait(lambda: isinstance(app.screen, HelpScreen), "the help screen")
                    ui_latency.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.1)
                    press(app, "escape", "\x1b")
                    await _wait(lambda: isinstance(app.screen, MainScreen), "the main screen")
                elif slices % 4 == 3:  # the round trip: an inner step comes back from the engine and is drawn
                    taken = main.snapshot["inner_steps_taken"]
                    press(app, "i", "i")
                    await _wait(lambda: f"· {taken + 1} step" in str(fit.border_title), "the inner step")
                    round_trip.append(time.perf_counter() - t0)
                await asyncio.sleep(max(0.0, slice_seconds - (time.perf_counter() - t0)))
                os.kill(engine, signal.SIGSTOP)
                explorer_time += time.perf_counter() - t0
                t1 = time.perf_counter()
                os.kill(alone.process.pid, signal.SIGCONT)
                await asyncio.sleep(slice_seconds)  # the interface stays up: no snapshot comes, so it idles
                os.kill(alone.process.pid, signal.SIGSTOP)
                headless_time += time.perf_counter() - t1
            t0 = time.perf_counter()
            os.kill(engine, signal.SIGCONT)
            await toggled(app, main, False)  # the exact last step
            explorer_time += time.perf_counter() - t0
            wall = time.perf_counter() - wall
            explorer_steps = main.snapshot["step"] - start_step
            headless_steps = alone.counter.value - start_count
            result = {
                "headless_its_per_second": headless_steps / headless_time,
                "its_per_second": explorer_steps / explorer_time,
                "slices": slices,
                "explorer_seconds": explorer_time,
                "headless_seconds": headless_time,
                "ui_process_cpu_share": (time.process_time() - ui_cpu) / explorer_time,
                "engine_process_cpu_share": (cpu_seconds(engine) - engine_cpu) / explorer_time,
                "headless_process_cpu_share": (cpu_seconds(alone.process.pid) - headless_cpu) / headless_time,
                "fit_redraws_per_second": (fit.renders - fit_renders) / explorer_time,
                "chart_redraws_per_second": (chart.renders - chart_renders) / explorer_time,
                "key_to_screen_ms": [round(v * 1000, 1) for v in ui_latency],
                "inner_step_round_trip_ms": [round(v * 1000, 1) for v in round_trip],
            }
            result["share"] = result["its_per_second"] / result["headless_its_per_second"]
            await pilot.press("q")
            await pilot.press("d")  # the training is unsaved: discard it (the dialog asks)
    finally:
        try:
            os.kill(app.engine.process.pid, signal.SIGCONT)
        except (AttributeError, OSError):
            pass
        alone.close()
    return result


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"samples": len(ordered), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% confidence interval (Student t)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, T975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of training on each side per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each a fresh app and headless process")
    parser.add_argument("--slice", type=float, default=0.5, help="seconds each side runs before the other takes over")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "explorer_throughput.json")
    args = parser.parse_args()
    if not (args.seconds > 0 and args.rounds >= 1 and 0.05 <= args.slice <= args.seconds):
        parser.error("--seconds must be positive, --rounds at least 1 and --slice between 0.05 and --seconds")
    rounds = []
    for index in range(args.rounds):
        shown = asyncio.run(measure(args.seconds, args.slice))
        rounds.append(shown)
        print(f"round {index + 1}: headless {shown['headless_its_per_second']:,.0f} meta-it/s, explorer "
              f"{shown['its_per_second']:,.0f} meta-it/s ({shown['share']:.0%}), cpu ui {shown['ui_process_cpu_share']:.0%} "
              f"engine {shown['engine_process_cpu_share']:.0%} headless {shown['headless_process_cpu_share']:.0%}, "
              f"fit redraws {shown['fit_redraws_per_second']:.1f}/s, "
              f"key -> screen median {statistics.median(shown['key_to_screen_ms']):.0f} ms, "
              f"inner step round trip median {statistics.median(shown['inner_step_round_trip_ms']):.0f} ms", flush=True)
    headless_mean = statistics.mean(r["headless_its_per_second"] for r in rounds)
    explorer_mean = statistics.mean(r["its_per_second"] for r in rounds)
    shares = [r["share"] for r in rounds]
    share_mean, share_ci = mean_ci(shares)
    keys = [v for r in rounds for v in r["key_to_screen_ms"]]
    trips = [v for r in rounds for v in r["inner_step_round_trip_ms"]]
    import torch

    document = {
        "command": "python benchmarks/explorer_throughput.py " + " ".join(sys.argv[1:]),
        "workload": "shipped sinusoid MAML run: 1-40-40-1 relu, meta-batch 25, 10 shots, 1 inner step, second order",
        "explorer_size": "160x48 (App.run_test, headless driver, plots redrawing)",
        "method": f"interleaved slices of {args.slice:g} s (the other side stopped with SIGSTOP), {args.seconds:g} s a side per round",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_at_end": os.getloadavg()},
        "headless_its_per_second": headless_mean,
        "explorer_its_per_second": explorer_mean,
        "explorer_share_of_headless": {"mean": share_mean, "ci95": share_ci, "median": statistics.median(shares),
                                       "min": min(shares), "max": max(shares), "rounds": len(shares)},
        "key_to_screen_ms": summary(keys),
        "inner_step_round_trip_ms": summary(trips),
        "rounds": rounds,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"explorer keeps {share_mean:.1%} ± {share_ci:.1%} of headless meta-it/s (median {statistics.median(shares):.1%}, "
          f"{len(shares)} rounds; {explorer_mean:,.0f} vs {headless_mean:,.0f}); key -> screen p95 "
          f"{document['key_to_screen_ms']['p95']:.0f} ms; inner step round trip p95 "
          f"{document['inner_step_round_trip_ms']['p95']:.0f} ms. Wrote {args.out}")


if __name__ == "__main__":
    main()
