"""Speed of the default protocol in two revisions of the engine, measured in one run.

Checks out ``--before`` (a git revision) into a temporary worktree and times the same workload in
it and in the working tree, alternating rounds so that the machine's load hits both alike:
``MetaLearner(RunConfig(...)).outer_step(metrics=False)`` on the sinusoid protocol (1-40-40-1,
meta-batch 25, 10 shots, 10 query points), for each case of ``engine.benchmark.CASES``, one thread.
Writes the medians of the rounds to ``--out``:

    python benchmarks/compare_revisions.py --before 5a95591 --rounds 5 --seconds 2 --out benchmarks/speed-before-after.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = r"""
import json, sys, time, torch
from engine.config import AlgoConfig, RunConfig, TrainConfig
from engine.trainer import MetaLearner
torch.set_num_threads(1)
seconds, first_order, steps = float(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
config = RunConfig(algo=AlgoConfig(name="fomaml" if first_order else "maml", inner_lr=0.01, inner_steps=steps),
                   train=TrainConfig(meta_batch_size=25, shots=10, query=10, log_every=10**9))
learner = MetaLearner(config, "cpu", threads=1)
for _ in range(20):
    learner.outer_step(metrics=False)
count, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    learner.outer_step(metrics=False)
    count += 1
print(json.dumps(count / (time.perf_counter() - start)))
"""
CASES = (("second-order, 1 step", False, 1), ("first-order, 1 step", True, 1), ("second-order, 5 steps", False, 5))


def measure(tree: Path, seconds: float, first_order: bool, steps: int) -> float:
    done = subprocess.run([sys.executable, "-c", SNIPPET, str(seconds), "1" if first_order else "0", str(steps)],
                          cwd=tree, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "speed-before-after.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        old = Path(scratch) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            results = []
            for label, first_order, steps in CASES:
                before, after = [], []
                for _ in range(args.rounds):
                    before.append(measure(old, args.seconds, first_order, steps))
                    after.append(measure(ROOT, args.seconds, first_order, steps))
                row = {"case": label, "before": statistics.median(before), "after": statistics.median(after),
                       "before_rounds": before, "after_rounds": after}
                row["ratio"] = row["after"] / row["before"]
                results.append(row)
                print(f"{label:24s} before {row['before']:8.1f}  after {row['after']:8.1f}  meta-it/s  "
                      f"(after/before {row['ratio']:.2f})", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    args.out.write_text(json.dumps({"before": args.before, "after": f"{head} + working tree", "rounds": args.rounds,
                                    "seconds": args.seconds, "threads": 1, "cases": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
