"""Few-shot classification on digits: every algorithm, 5-way 1-shot and 5-shot, three seeds.

Each (algorithm, shots, seed) is meta-trained on the meta-train classes (digits 0, 1, 2, 3, 6, 9
and their rotations) and evaluated on 600 episodes of the meta-test classes (digits 4 and 5 and
their rotations, never trained on) with the paper protocol of ``maml-tui eval``: accuracy per inner
step, mean with its 95% CI over the episodes. The checkpoint evaluated is the best on the
meta-validation classes (``best.pt``). Every gradient-based algorithm trains with the same inner
rate and one inner step (Reptile five: with one it is plain joint training); the baselines fine-tune
with the same rule at test time. Per algorithm the table
gives the mean over seeds of the per-seed accuracy, with the spread of the three seeds (min–max)
and each seed's own 95% CI half-width (the largest); ``--table`` prints it from the JSON. Numbers go to ``benchmarks/digits_table.json``.

    python benchmarks/digits_table.py                      # the README table (about 30 minutes on one idle core)
    python benchmarks/digits_table.py --steps 300 --seeds 1 --algorithms maml,protonet   # a quick look

Each run is also the command ``maml-tui train --task digits --ways 5 --shots K --query 5 --algo A
--inner-lr 0.4 --inner-steps 1 --meta-batch 16 --steps 1000 --hidden 128,128 --log-every 83 --seed S`` followed by
``maml-tui eval RUN/best.pt --steps 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPTILE_STEPS = 5  # Reptile with one inner step is joint training (Nichol et al. 2018, section 5); it needs k > 1
ALGORITHMS = ["maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "alphamaml", "r2d2", "protonet", "pretrain", "scratch"]


def one_run(algorithm: str, shots: int, seed: int, steps: int, model: str, hidden: tuple[int, ...], work: Path) -> dict:
    import torch

    from engine.config import RunConfig
    from engine.evaluate import evaluate
    from engine.trainer import MetaLearner, train

    config = RunConfig().replace(
        task={"name": "digits", "ranges": {"ways": 5}}, model={"kind": model, "hidden": hidden},
        algo={"name": algorithm, "inner_lr": 0.4, "inner_steps": REPTILE_STEPS if algorithm == "reptile" else 1},
        train={"steps": steps, "meta_batch_size": 16, "shots": shots, "query": 5, "seed": seed,
               "log_every": max(steps // 12, 1), "checkpoint_every": steps or 1})
    run = work / f"{algorithm}-{shots}shot-seed{seed}"
    start = time.perf_counter()
    train(config, run, device="cpu", threads=1)
    seconds = time.perf_counter() - start
    best = run / "best.pt"
    learner = MetaLearner.from_run(best if best.is_file() else run, "cpu", threads=1)
    result = evaluate(learner.algorithm, learner.parameters(), learner.family, shots=shots, steps=5, tasks=600, query=15)
    torch.set_num_threads(1)
    return {"algorithm": algorithm, "shots": shots, "seed": seed, "train_seconds": seconds,
            "evaluated": "best.pt" if best.is_file() else "checkpoint.pt",
            "accuracy": result.metrics["accuracy"], "accuracy_ci95": result.metrics_ci95["accuracy"],
            "loss": result.mean, "diverged": result.diverged}


def markdown(document: dict) -> str:
    """The README table: per algorithm and shots, accuracy after 1 and after 5 inner steps."""
    rows = document["runs"]
    shots_seen = sorted({r["shots"] for r in rows})
    lines = ["| algorithm | " + " | ".join(f"{k}-shot, step 1 | {k}-shot, step 5" for k in shots_seen) + " |",
             "|---|" + "---|---|" * len(shots_seen)]
    order = [a for a in ALGORITHMS if any(r["algorithm"] == a for r in rows)]
    for algorithm in order:
        cells = []
        for shots in shots_seen:
            mine = [r for r in rows if r["algorithm"] == algorithm and r["shots"] == shots]
            for step in (1, 5):
                if not mine:
                    cells.append("—")
                    continue
                values = [100 * r["accuracy"][step] for r in mine]
                ci = max(100 * r["accuracy_ci95"][step] for r in mine)
                spread = f" [{min(values):.1f}–{max(values):.1f}]" if len(values) > 1 else ""
                cells.append(f"{sum(values) / len(values):.1f}{spread} ±{ci:.1f}")
        lines.append(f"| `{algorithm}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS))
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--hidden", default="128,128")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "digits_table.json")
    parser.add_argument("--table", action="store_true", help="print the README table from --out and stop")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.out.read_text())))
        return
    hidden = tuple(int(h) for h in args.hidden.split(","))
    import torch

    rows = []
    document = {"command": "python benchmarks/digits_table.py " + " ".join(sys.argv[1:]),
                "protocol": {"ways": 5, "query_train": 5, "query_test": 15, "test_episodes": 600, "inner_lr": 0.4,
                             "inner_steps_train": 1, "reptile_inner_steps": REPTILE_STEPS, "eval_steps": 5, "meta_batch": 16,
                             "steps": args.steps, "model": args.model, "hidden": list(hidden), "seeds": args.seeds},
                "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
                "runs": rows}
    with tempfile.TemporaryDirectory() as work:
        for shots in (int(s) for s in args.shots.split(",")):
            for algorithm in args.algorithms.split(","):
                for seed in range(args.seeds):
                    row = one_run(algorithm, shots, seed, args.steps, args.model, hidden, Path(work))
                    rows.append(row)
                    print(f"{algorithm:10s} {shots}-shot seed {seed}: step 1 {100 * row['accuracy'][1]:.1f}%, "
                          f"step 5 {100 * row['accuracy'][5]:.1f}% ({row['train_seconds']:.0f} s)", flush=True)
                    args.out.write_text(json.dumps(document, indent=1) + "\n")  # after every run: a long sweep keeps what it did
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
