"""Reproduce the README's fidelity table: every algorithm on the sinusoid 5-shot protocol, three seeds.

Each run is ``maml-tui train`` with the algorithm's defaults (the MAML paper's protocol: 70,000
outer steps, meta-batch 25, K = 10, Adam 1e-3) and a seed, plus MAML at the paper text's inner
rate 0.01 to show its blow-up rate. All runs are evaluated together with the paper's meta-test
protocol at K = 5 (600 tasks, 0..10 inner steps; ``maml-tui eval --json``), written to
``benchmarks/fidelity.json`` and rendered as the README's markdown table::

    python benchmarks/fidelity.py --out runs/fidelity --jobs 2          # about an hour on 2 cores
    python benchmarks/fidelity.py --table                               # re-render from the JSON

Existing finished runs in ``--out`` are kept and not retrained. A run whose training diverges is
not retried: it is evaluated at the last good checkpoint the trainer kept, and its row says so.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS = ("maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "cavia", "alphamaml", "r2d2", "imaml", "hfmaml",
              "pretrain", "scratch")
PAPER = {"maml": (0.67, 0.38, 0.35), "pretrain": (2.41, 2.23, 2.19)}  # Finn et al. 2017, Table 2 (K = 5)
SHOWN_STEPS = (1, 5, 10)


def runs(seeds: list[int], algorithms=ALGORITHMS) -> list[tuple[str, list[str]]]:
    out = []
    for algo in algorithms:
        out += [(f"{algo}-seed{seed}", ["--algo", algo, "--seed", str(seed)]) for seed in seeds]
    if "maml" in algorithms:
        out += [(f"maml-lr0.01-seed{seed}", ["--inner-lr", "0.01", "--seed", str(seed)]) for seed in seeds]
    return out


def cli() -> list[str]:
    return [sys.executable, "-m", "maml_tui"]


def finished(run: Path) -> bool:
    """Whether ``run`` trained all its outer steps (a checkpoint alone may be a run cut short)."""
    try:
        steps = json.loads((run / "config.json").read_text())["config"]["train"]["steps"]
        last = (run / "metrics.jsonl").read_text().strip().splitlines()[-1]
        return (run / "checkpoint.pt").is_file() and json.loads(last)["step"] >= steps
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


DIVERGED = "fidelity-diverged.json"  # written into a run whose training diverged: it is evaluated at its last good checkpoint


def diverged(run: Path) -> dict | None:
    """``{"diverged_at": step, "checkpoint_step": step}`` for a run whose training diverged, else None."""
    try:
        return json.loads((run / DIVERGED).read_text())
    except (OSError, ValueError):
        return None


def train(out: Path, name: str, flags: list[str]) -> tuple[str, float, str]:
    run = out / name
    if finished(run):
        return name, 0.0, "kept"
    if (lost := diverged(run)) is not None:
        return name, 0.0, f"kept: its training diverged at outer step {lost['diverged_at']:,}"
    start = time.perf_counter()
    command = ["train", "--resume", str(run)] if (run / "checkpoint.pt").is_file() else ["train", "--out", str(run), *flags]
    done = subprocess.run([*cli(), *command, "--quiet", "--device", "cpu"], capture_output=True, text=True)
    status = ("resumed" if command[1] == "--resume" else "trained") if done.returncode == 0 else f"failed: {done.stderr.strip()}"
    found = re.search(r"diverged at step (\d+)", done.stderr, re.IGNORECASE)
    if done.returncode != 0 and found and (run / "checkpoint.pt").is_file():
        import torch  # the step of the last good checkpoint, which the trainer kept

        step = int(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["step"])
        (run / DIVERGED).write_text(json.dumps({"diverged_at": int(found.group(1)), "checkpoint_step": step}) + "\n")
    return name, time.perf_counter() - start, status


def cell(run: dict, step: int) -> str:
    mean, ci, median, diverged = (run[k][step] for k in ("mean", "ci95", "median", "diverged"))
    if mean is None:
        return f"all {diverged} diverged"
    text = f"{mean:.3f} ± {ci:.3f} · {median:.3f}"
    return text + (f" · **{diverged} div.**" if diverged else " · 0")


def table(document: dict) -> str:
    lines = ["| run | inner lr | steps (train) | 1 step | 5 steps | 10 steps | paper (1 / 5 / 10) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in document["runs"]:
        paper = PAPER.get(run["algorithm"], ()) if "lr0.01" not in run["run"] else PAPER["maml"]
        name = Path(run["run"]).name
        if run.get("training_diverged"):
            lost = run["training_diverged"]
            name += f" (training diverged at outer step {lost['diverged_at']:,}; its last good checkpoint, step {lost['checkpoint_step']:,})"
        lines.append(f"| {name} | {run['inner_lr']:g} | {run.get('train_inner_steps', '')} | "
                     + " | ".join(cell(run, s) for s in SHOWN_STEPS) + f" | {' / '.join(map(str, paper))} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fidelity")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "fidelity.json")
    parser.add_argument("--table", action="store_true", help="only render the table from --json")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS),
                        help="train and evaluate only these; their rows replace theirs in --json, the others are kept")
    args = parser.parse_args()
    if not args.table:
        chosen = tuple(a for a in ALGORITHMS if a in args.algorithms.split(","))
        planned = runs(args.seeds, chosen)
        args.out.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            for name, seconds, status in pool.map(lambda r: train(args.out, *r), planned):
                print(f"{name:28s} {status} ({seconds:.0f} s)", flush=True)
        names = [str(args.out / name) for name, _ in planned if finished(args.out / name) or diverged(args.out / name)]
        if not names:
            parser.exit(1, "no run finished or left a checkpoint to evaluate\n")
        done = subprocess.run([*cli(), "eval", *names, "--shots", "5", "--steps", "10", "--json", "--device", "cpu"],
                              capture_output=True, text=True, check=True)
        document = json.loads(done.stdout)
        for run in document["runs"]:
            config = json.loads((Path(run["run"]) / "config.json").read_text())["config"]
            run["train_inner_steps"] = config["algo"]["inner_steps"]
            if (lost := diverged(Path(run["run"]))) is not None:
                run["training_diverged"] = lost
            run["run"] = str(Path(run["run"]).relative_to(ROOT)) if Path(run["run"]).is_relative_to(ROOT) else run["run"]
        if chosen != ALGORITHMS and args.json.is_file():  # a partial run: keep the other algorithms' rows
            fresh = {Path(r["run"]).name for r in document["runs"]}
            kept = [r for r in json.loads(args.json.read_text())["runs"] if Path(r["run"]).name not in fresh]
            order = {name: i for i, (name, _) in enumerate(runs(args.seeds))}
            document["runs"] = sorted(kept + document["runs"], key=lambda r: order.get(Path(r["run"]).name, len(order)))
        args.json.write_text(json.dumps(document, indent=1) + "\n")
    print(table(json.loads(args.json.read_text())))


if __name__ == "__main__":
    main()
