"""The project report's transfer-learning experiment on the digits, next to MAML.

Task A (source) is 0 vs 1, task B (target) is 2 vs 3, on scikit-learn's 8x8 digits (unrotated).
Four starting points for the same network (an MLP 64-40-40-2) are fine-tuned on task B from K
examples per class with plain gradient steps (rate 0.4, every parameter), and tested on every
other image of 2 and 3:

1. scratch: a random initialisation;
2. transfer A -> B: trained on all images of 0 vs 1 (Adam, 300 steps), then fine-tuned;
3. generalist: a 6-way classifier trained on all images of 4..9 (Adam, 600 steps), its body kept
   and a fresh 2-way head;
4. MAML: meta-trained (second order, one inner step at rate 0.4, meta-batch 16, 2,000 steps) on
   2-way K-shot episodes of the digits 4..9; 2 and 3 are never seen before fine-tuning.

Fine-tuning is repeated on 200 draws of the K examples per seed, for three seeds; the table gives
the accuracy after 0, 1, 5 and 10 steps, the mean over every draw of every seed with its 95% CI,
and the spread of the three seeds' means. Numbers go to ``benchmarks/digits_transfer.json``.

    python benchmarks/digits_transfer.py              # K = 1 and 5, three seeds (about 5 minutes)
    python benchmarks/digits_transfer.py --shots 5 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS_SHOWN = (0, 1, 5, 10)
RATE = 0.4


def digits_of(data, wanted):
    """Images (n, 1, 8, 8) and labels 0..len(wanted)-1 of the unrotated digits ``wanted``."""
    import torch

    mask = torch.isin(data.labels, torch.tensor(wanted))
    labels = data.labels[mask]
    relabel = torch.tensor([wanted.index(int(v)) if int(v) in wanted else -1 for v in range(10)])
    return data.images[mask], relabel[labels]


def supervised(model, params, x, y, steps, generator, lr=1e-3, batch=64):
    """Plain supervised training with Adam (the pre-training of transfer and generalist)."""
    import torch
    import torch.nn.functional as nnf

    params = {n: v.clone().requires_grad_() for n, v in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    for _ in range(steps):
        pick = torch.randint(0, x.shape[0], (batch,), generator=generator)
        loss = nnf.cross_entropy(model.forward(params, x[pick]), y[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {n: v.detach() for n, v in params.items()}


class TwoDigitFamily:
    """Episodes of two digits drawn among ``digits`` (unrotated): the meta-training of MAML here."""

    def __init__(self, data, digits, dtype):
        from engine.classification import ImageClasses

        names = tuple(str(d) for d in range(10))
        self.data = ImageClasses(data.images, data.labels, {"train": tuple(digits), "val": tuple(digits), "test": tuple(digits)},
                                 names, rotations=1)

    def family(self):
        from engine.classification import ClassificationFamily

        data = self.data

        class Family(ClassificationFamily):
            name = "digits-4-to-9"

            def load(self):
                return data

        return Family(ways=2)


def meta_train(model, seed, shots, steps, data):
    import torch

    import engine

    family = TwoDigitFamily(data, [4, 5, 6, 7, 8, 9], torch.float32).family()
    algorithm = engine.make_algorithm("maml", model, inner_lr=RATE, inner_steps=1, loss=engine.CrossEntropy())
    generator = torch.Generator().manual_seed(seed)
    params = {n: v.requires_grad_() for n, v in algorithm.init(generator).items()}
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    for _ in range(steps):
        batch = family.sample(16, shots, 5, generator)
        _, grads = algorithm.meta_gradient(params, batch)
        for name, value in params.items():
            value.grad = grads[name]
        optimizer.step()
    return {n: v.detach() for n, v in params.items()}


def fine_tune_accuracy(model, start, x, y, shots, draws, generator):
    """Accuracy (draws, steps) after 0..10 plain gradient steps on ``shots`` examples per class of (x, y)."""
    import torch

    import engine

    algorithm = engine.make_algorithm("scratch", model, inner_lr=RATE, inner_steps=10, loss=engine.CrossEntropy())
    rows = []
    for _ in range(draws):
        support, query = [], []
        for label in (0, 1):
            members = torch.nonzero(y == label).flatten()
            order = members[torch.randperm(members.numel(), generator=generator)]
            support.append(order[:shots])
            query.append(order[shots:])
        s, q = torch.cat(support), torch.cat(query)
        history = algorithm.adapt(start, x[s], y[s], 10, x[q], y[q], keep_params=False)
        rows.append(torch.stack([m["accuracy"][0] for m in history.query_metrics]))
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--meta-steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "digits_transfer.json")
    args = parser.parse_args()
    import torch

    import engine
    from engine.classification import load_digits

    torch.set_num_threads(1)
    data = load_digits()
    x_b, y_b = digits_of(data, [2, 3])
    x_a, y_a = digits_of(data, [0, 1])
    x_g, y_g = digits_of(data, [4, 5, 6, 7, 8, 9])
    two_way = engine.MLP(hidden=(40, 40), in_features=64, out_features=2)
    six_way = engine.MLP(hidden=(40, 40), in_features=64, out_features=6)
    from engine.model import ImageMLP

    model = ImageMLP((40, 40), "relu", (1, 8, 8), 2)
    results = {}
    for shots in (int(k) for k in args.shots.split(",")):
        per_strategy: dict[str, list] = {}
        for seed in range(args.seeds):
            generator = torch.Generator().manual_seed(seed)
            starts = {"scratch": two_way.init(generator)}
            starts["transfer A->B"] = supervised(model, two_way.init(generator), x_a, y_a, 300, generator)
            body = supervised(ImageMLP((40, 40), "relu", (1, 8, 8), 6), six_way.init(generator), x_g, y_g, 600, generator)
            fresh = two_way.init(generator)
            starts["generalist"] = {**{n: v for n, v in body.items() if not n.startswith("layer2")},
                                    **{n: v for n, v in fresh.items() if n.startswith("layer2")}}
            starts["maml"] = meta_train(model, seed, shots, args.meta_steps, data)
            for name, start in starts.items():
                table = fine_tune_accuracy(model, start, x_b, y_b, shots, args.draws, torch.Generator().manual_seed(1000 + seed))
                per_strategy.setdefault(name, []).append(table)
                print(f"{shots}-shot seed {seed} {name:14s}: " + ", ".join(
                    f"step {s} {100 * float(table[:, s].mean()):.1f}%" for s in STEPS_SHOWN), flush=True)
        summary = {}
        for name, tables in per_strategy.items():
            every = torch.cat(tables).double()
            seeds = torch.stack([t.double().mean(0) for t in tables])
            summary[name] = {f"step {s}": {"mean": float(every[:, s].mean()),
                                           "ci95": 1.96 * float(every[:, s].std()) / math.sqrt(every.shape[0]),
                                           "seed_min": float(seeds[:, s].min()), "seed_max": float(seeds[:, s].max())}
                             for s in STEPS_SHOWN}
        results[f"{shots}-shot"] = summary
    document = {"command": "python benchmarks/digits_transfer.py " + " ".join(sys.argv[1:]),
                "protocol": {"source": "0 vs 1", "target": "2 vs 3", "generalist": "4..9 (6-way)", "maml": "2-way episodes of 4..9",
                             "fine_tune_rate": RATE, "draws_per_seed": args.draws, "seeds": args.seeds,
                             "meta_steps": args.meta_steps, "model": "MLP 64-40-40-2"},
                "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
                "results": results}
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    for shots, summary in results.items():
        print(f"\n{shots} on 2 vs 3 (accuracy %, mean ± 95% CI over {args.seeds} seeds x {args.draws} draws; seeds' range)")
        for name, steps in summary.items():
            print(f"  {name:14s} " + "  ".join(f"{key}: {100 * v['mean']:.1f} ± {100 * v['ci95']:.1f} "
                                                 f"[{100 * v['seed_min']:.1f}-{100 * v['seed_max']:.1f}]" for key, v in steps.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
