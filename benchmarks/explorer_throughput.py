"""Meta-training speed with the explorer open and redrawing, against the same training headless.

Two things are compared in one run, alternating A B A B so a busy machine hurts both alike:

* headless: the shipped sinusoid MAML run stepped by ``MetaLearner.outer_step`` in a process of its
  own (metrics every 100 steps, as ``maml-tui train`` does);
* explorer: the real app (``App.run_test`` at 160x48, plots redrawing) with its real engine process,
  training live after a press of space; meta-it/s from the engine's step counter over the window.

While the explorer trains, the script also presses a key every second and times the answer: ``?`` (the help
screen opens: the interface's own latency) and ``i`` (an inner step comes back from the engine
process as a new picture: the round trip). Numbers go to ``benchmarks/explorer_throughput.json``.

    python benchmarks/explorer_throughput.py [--seconds 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROBE_INTERVAL = 2.0  # seconds between two presses of the same timed key (one key a second in all)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _headless(seconds: float, results) -> None:
    from engine.trainer import MetaLearner
    from maml_tui.engine_link import SHIPPED_RUN

    learner = MetaLearner.from_run(SHIPPED_RUN, "cpu")
    for _ in range(50):  # warm up
        learner.outer_step(metrics=False)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        learner.outer_step(metrics=(learner.step + 1) % 100 == 0)
        steps += 1
    results.put(steps / (time.perf_counter() - start))


def headless(seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_headless, args=(seconds, results))
    process.start()
    value = results.get(timeout=seconds + 120)
    process.join()
    return value


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


async def explorer(seconds: float, size=(160, 48)) -> dict:
    from maml_tui.app import ExplorerApp
    from maml_tui.engine_link import EngineLink
    from maml_tui.screens import HelpScreen, MainScreen
    from maml_tui.widgets import FitPlot, LossChart

    app = ExplorerApp(EngineLink(device="cpu"))
    ui_latency, round_trip = [], []
    async with app.run_test(size=size) as pilot:
        main = app.main
        while main is None or main.snapshot is None or not main.ready:  # the preview is drawn before the engine is up
            await pilot.pause(0.05)
            main = app.main
        await pilot.press("space")
        await asyncio.sleep(2.0)  # warm up
        fit, chart = main.query_one(FitPlot), main.query_one(LossChart)
        engine_pid = app.engine.process.pid
        start_step, start = main.snapshot["step"], time.perf_counter()
        ui_cpu, engine_cpu = time.process_time(), cpu_seconds(engine_pid)
        fit_renders, chart_renders = fit.renders, chart.renders
        next_probe, probes = start + PROBE_INTERVAL / 2, 0
        while time.perf_counter() - start < seconds:
            await asyncio.sleep(0.02)
            if time.perf_counter() < next_probe:
                continue
            probes += 1
            t0 = time.perf_counter()
            if probes % 2:  # the interface alone: the help screen opens
                press(app, "question_mark", "?")
                while not isinstance(app.screen, HelpScreen):
                    await asyncio.sleep(0.001)
                ui_latency.append(time.perf_counter() - t0)
                await asyncio.sleep(0.2)
                press(app, "escape", "\x1b")
                while not isinstance(app.screen, MainScreen):
                    await asyncio.sleep(0.001)
            else:  # the round trip: an inner step comes back from the engine and is drawn
                taken = main.snapshot["inner_steps_taken"]
                press(app, "i", "i")
                while f"· {taken + 1} step" not in str(fit.border_title):
                    await asyncio.sleep(0.001)
                round_trip.append(time.perf_counter() - t0)
            next_probe = time.perf_counter() + PROBE_INTERVAL / 2
        elapsed = time.perf_counter() - start
        steps = main.snapshot["step"] - start_step
        result = {
            "its_per_second": steps / elapsed,
            "ui_process_cpu_share": (time.process_time() - ui_cpu) / elapsed,
            "engine_process_cpu_share": (cpu_seconds(engine_pid) - engine_cpu) / elapsed,
            "fit_redraws_per_second": (fit.renders - fit_renders) / elapsed,
            "chart_redraws_per_second": (chart.renders - chart_renders) / elapsed,
            "key_to_screen_ms": [round(v * 1000, 1) for v in ui_latency],
            "inner_step_round_trip_ms": [round(v * 1000, 1) for v in round_trip],
        }
        await pilot.press("space")
        await pilot.press("q")
        await pilot.press("d")  # the training is unsaved: discard it (the dialog asks)
    return result


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {"samples": len(ordered), "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="headless/explorer pairs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "explorer_throughput.json")
    args = parser.parse_args()
    rounds = []
    for index in range(args.rounds):
        alone = headless(args.seconds)
        shown = asyncio.run(explorer(args.seconds))
        rounds.append({"headless_its_per_second": alone, **shown})
        print(f"round {index + 1}: headless {alone:,.0f} meta-it/s, explorer {shown['its_per_second']:,.0f} meta-it/s "
              f"({shown['its_per_second'] / alone:.0%}), cpu ui {shown['ui_process_cpu_share']:.0%} engine {shown['engine_process_cpu_share']:.0%}, fit redraws {shown['fit_redraws_per_second']:.1f}/s, "
              f"key -> screen median {statistics.median(shown['key_to_screen_ms']):.0f} ms, "
              f"inner step round trip median {statistics.median(shown['inner_step_round_trip_ms']):.0f} ms", flush=True)
    headless_mean = statistics.mean(r["headless_its_per_second"] for r in rounds)
    explorer_mean = statistics.mean(r["its_per_second"] for r in rounds)
    keys = [v for r in rounds for v in r["key_to_screen_ms"]]
    trips = [v for r in rounds for v in r["inner_step_round_trip_ms"]]
    import torch

    document = {
        "command": "python benchmarks/explorer_throughput.py " + " ".join(sys.argv[1:]),
        "workload": "shipped sinusoid MAML run: 1-40-40-1 relu, meta-batch 25, 10 shots, 1 inner step, second order",
        "explorer_size": "160x48 (App.run_test, headless driver, plots redrawing)",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_average_at_end": os.getloadavg()},
        "headless_its_per_second": headless_mean,
        "explorer_its_per_second": explorer_mean,
        "explorer_share_of_headless": explorer_mean / headless_mean,
        "key_to_screen_ms": summary(keys),
        "inner_step_round_trip_ms": summary(trips),
        "rounds": rounds,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"explorer keeps {explorer_mean / headless_mean:.0%} of headless meta-it/s "
          f"({explorer_mean:,.0f} vs {headless_mean:,.0f}); key -> screen p95 {document['key_to_screen_ms']['p95']:.0f} ms; "
          f"inner step round trip p95 {document['inner_step_round_trip_ms']['p95']:.0f} ms. Wrote {args.out}")


if __name__ == "__main__":
    main()
