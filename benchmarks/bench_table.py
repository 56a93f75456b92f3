"""Render ``maml-tui bench --out FILE`` JSON as the README's markdown speed table (one column per backend)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BACKENDS = ("fused", "lowrank", "closed_form", "torch.func")


def main(path: str) -> None:
    document = json.loads(Path(path).read_text())
    print(f"| case ({document['device']}, torch {document['torch']}) | engine, auto | "
          + " | ".join(f"`{b}`" for b in BACKENDS) + " | plain loop | auto vs loop |")
    print("| --- | --- | " + " | ".join("---" for _ in BACKENDS) + " | --- | --- |")
    for case in document["cases"]:
        forced = [f"{case['backends'][b]:,.0f}" if b in case["backends"] else "refuses" for b in BACKENDS]
        print(f"| {case['label']} | {case['engine_its']:,.0f} ({case['backend']}) | " + " | ".join(forced)
              + f" | {case['loop_its']:,.1f} | {case['ratio']:.1f}x |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/bench-cpu.json")
