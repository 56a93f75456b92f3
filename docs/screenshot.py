"""Write docs/explorer.svg, the README's picture: the explorer on the shipped model, 3 inner steps, 120x36.

    python docs/screenshot.py
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from maml_tui.app import ExplorerApp
from maml_tui.engine_link import EngineLink


async def main() -> None:
    app = ExplorerApp(EngineLink(mode="thread", device="cpu"))
    async with app.run_test(size=(120, 36)) as pilot:
        deadline = time.monotonic() + 60
        while app.main is None or app.main.snapshot is None:
            assert time.monotonic() < deadline, "the engine did not answer"
            await pilot.pause(0.05)
        await pilot.press("i", "i", "i")
        while app.main.snapshot["inner_steps_taken"] < 3:
            await pilot.pause(0.05)
        app.main.redraw(force=True)
        await pilot.pause(0.2)
        target = Path(__file__).resolve().parent / "explorer.svg"
        app.save_screenshot(filename=target.name, path=str(target.parent))
        print(target)


if __name__ == "__main__":
    asyncio.run(main())
