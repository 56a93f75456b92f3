"""Render ``maml-tui bench --out FILE`` JSON as the README's markdown speed table."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str) -> None:
    document = json.loads(Path(path).read_text())
    print(f"| case ({document['device']}, torch {document['torch']}) | engine, meta-it/s | plain loop, meta-it/s | speed-up |")
    print("| --- | --- | --- | --- |")
    for case in document["cases"]:
        print(f"| {case['label']} | {case['engine_its']:,.0f} | {case['loop_its']:,.1f} | {case['ratio']:.1f}x |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/bench-cpu.json")
