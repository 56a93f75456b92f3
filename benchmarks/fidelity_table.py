"""Render ``maml-tui eval --json`` output as the README's markdown fidelity table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

PAPER = {"maml": (0.67, 0.38, 0.35), "pretrain": (2.41, 2.23, 2.19)}


def cell(run: dict, step: int) -> str:
    mean, ci = run["mse_mean"][step], run["mse_ci95"][step]
    if mean != mean or mean > 1e4:  # NaN or blown up
        return "diverges"
    return f"{mean:.3f} ± {ci:.3f}"


def main(path: str) -> None:
    document = json.loads(Path(path).read_text())
    print("| run | algorithm | inner lr | 0 steps | 1 step | 5 steps | 10 steps | paper (1 / 5 / 10) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in document["runs"]:
        paper = PAPER.get(run["algorithm"], ())
        print(f"| {Path(run['run']).name} | {run['algorithm']} | {run['inner_lr']:g} | {cell(run, 0)} | {cell(run, 1)} "
              f"| {cell(run, 5)} | {cell(run, 10)} | {' / '.join(map(str, paper))} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/fidelity.json")
