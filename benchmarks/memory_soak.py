"""Memory of both explorer processes over a long live-training session (a lecture, a demo left running).

The real app (``App.run_test`` at 160x48, plots redrawing) with its real engine process trains the
default model live (a press of space) for ``--minutes``; like a lecturer it also draws a new task
and takes an inner step every ten seconds, and opens the help screen now and then. Every
``--every`` seconds the script reads the resident memory (VmRSS) of the interface process and of the
engine process. The first ``--warmup`` minutes (imports, allocator pools, caches filling) are left
out; over the rest it reports, for each process, the memory at the start and end, the peak, and the
least-squares slope in MiB a minute. Numbers go to ``benchmarks/memory_soak.json``.

    python benchmarks/memory_soak.py                 # the 30-minute soak of the README
    python benchmarks/memory_soak.py --minutes 5     # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minutes, MiB) points, in MiB a minute."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


async def until(condition, app, what: str, seconds: float = 20.0) -> None:
    """Wait for ``condition``; a frozen interface is a failure of the soak, said with what is on screen."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > seconds:
            raise RuntimeError(f"waited {seconds:.0f} s for {what}; the screen is {type(app.screen).__name__}")
        await asyncio.sleep(0.01)


async def soak(minutes: float, every: float, warmup: float) -> dict:
    from benchmarks.explorer_throughput import press
    from maml_tui.app import ExplorerApp
    from maml_tui.engine_link import EngineLink
    from maml_tui.screens import HelpScreen, MainScreen

    app = ExplorerApp(EngineLink(device="cpu"))
    samples = []
    async with app.run_test(size=(160, 48)) as pilot:
        main = app.main
        while main is None or main.snapshot is None or not main.ready:
            await pilot.pause(0.05)
            main = app.main
        engine_pid = app.engine.process.pid
        await pilot.press("space")
        start = time.perf_counter()
        next_sample = next_action = start
        actions = 0
        while (now := time.perf_counter()) - start < minutes * 60:
            await asyncio.sleep(0.05)
            if now >= next_action:  # what a lecturer does while it trains
                actions += 1
                if actions % 6 == 0:
                    press(app, "question_mark", "?")
                    await until(lambda: isinstance(app.screen, HelpScreen), app, "the help screen to open")
                    await asyncio.sleep(0.5)
                    press(app, "escape", "\x1b")
                    await until(lambda: isinstance(app.screen, MainScreen), app, "the help screen to close")
                else:
                    press(app, "n", "n")
                    await asyncio.sleep(0.5)
                    press(app, "i", "i")
                next_action = now + 10.0
            if now >= next_sample:
                samples.append({"minutes": (now - start) / 60, "ui_mib": rss_mib(os.getpid()),
                                "engine_mib": rss_mib(engine_pid), "outer_step": main.snapshot["step"],
                                "records_on_screen": len(main.records["step"])})
                print(f"{samples[-1]['minutes']:6.1f} min  ui {samples[-1]['ui_mib']:7.1f} MiB  engine "
                      f"{samples[-1]['engine_mib']:7.1f} MiB  step {samples[-1]['outer_step']:,}  "
                      f"records {samples[-1]['records_on_screen']:,}", flush=True)
                next_sample = now + every
        await pilot.press("space")
        await pilot.press("q")
        await pilot.press("d")  # discard the unsaved training
    kept = [s for s in samples if s["minutes"] >= warmup]
    result = {}
    for process in ("ui", "engine"):
        values = [s[f"{process}_mib"] for s in kept]
        result[process] = {"after_warmup_mib": values[0], "end_mib": values[-1], "peak_mib": max(values),
                           "growth_mib": values[-1] - values[0],
                           "slope_mib_per_minute": slope([(s["minutes"], s[f"{process}_mib"]) for s in kept]),
                           "second_half_slope_mib_per_minute": slope([(s["minutes"], s[f"{process}_mib"]) for s in kept
                                                                      if s["minutes"] >= minutes / 2])}
    return {"samples": samples, **result, "outer_steps": samples[-1]["outer_step"] - samples[0]["outer_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between two memory readings")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes left out at the start")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "memory_soak.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:  # autosaves and preferences of the soak go here
        os.environ["MAML_TUI_STATE_DIR"] = str(Path(home) / "state")
        os.environ["MAML_TUI_CONFIG_DIR"] = str(Path(home) / "config")
        result = asyncio.run(soak(args.minutes, args.every, args.warmup))
    import torch

    document = {
        "command": "python benchmarks/memory_soak.py " + " ".join(sys.argv[1:]),
        "workload": "default explorer model (sinusoid MAML, 1-40-40-1) training live at 160x48, a new task and an "
                    "inner step every 10 s, the help screen every minute",
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "minutes": args.minutes, "warmup_minutes": args.warmup, **result,
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    for process in ("ui", "engine"):
        r = result[process]
        print(f"{process}: {r['after_warmup_mib']:.1f} -> {r['end_mib']:.1f} MiB (peak {r['peak_mib']:.1f}), "
              f"slope {r['slope_mib_per_minute']:+.3f} MiB/min (second half {r['second_half_slope_mib_per_minute']:+.3f})")
    print(f"{result['outer_steps']:,} outer steps. Wrote {args.out}")


if __name__ == "__main__":
    main()
