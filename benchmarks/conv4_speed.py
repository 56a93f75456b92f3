"""Meta-training speed on the conv net: the batched engine against a plain per-task loop, in one run.

The workload is Finn et al.'s Omniglot setting at a CPU-sized meta-batch: 28x28 images, 5-way
1-shot with 15 query images per class, conv4 with 64 filters, one inner step, second order (and
first order), on a small collection in Omniglot's layout (the images' content does not change the
cost). Both sides include episode sampling and the Adam step:

* engine: ``MetaLearner.outer_step`` (one ``vmap`` over the tasks, grouped convolutions);
* plain loop: the tutorial way, a Python loop over the meta-batch with
  ``torch.autograd.grad(create_graph=True)`` per task through ``torch.nn.functional`` layers.

They alternate A B A B so a busy machine hurts both alike. Numbers go to
``benchmarks/conv4_speed.json``.

    python benchmarks/conv4_speed.py [--seconds 20] [--meta-batch 8] [--device cpu]
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


def plain_loop_step(model, params: dict, optimizer, batch, inner_lr: float, first_order: bool):
    import torch
    import torch.nn.functional as nnf

    def forward(p, x):
        h = x
        for i in range(model.blocks):
            h = nnf.conv2d(h, p[f"block{i}.conv.weight"], p[f"block{i}.conv.bias"], padding=1)
            h = nnf.batch_norm(h, None, None, p[f"block{i}.norm.weight"], p[f"block{i}.norm.bias"], training=True)
            h = nnf.max_pool2d(torch.relu(h), 2, ceil_mode=True)
        return nnf.linear(h.flatten(1), p["head.weight"].T, p["head.bias"])

    names = list(params)
    total = 0.0
    for t in range(batch.num_tasks):
        loss = nnf.cross_entropy(forward(params, batch.x_support[t]), batch.y_support[t])
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not first_order)
        fast = {n: params[n] - inner_lr * g for n, g in zip(names, grads)}
        total = total + nnf.cross_entropy(forward(fast, batch.x_query[t]), batch.y_query[t])
    optimizer.zero_grad()
    (total / batch.num_tasks).backward()
    optimizer.step()


def timed(step, seconds: float) -> float:
    step()  # warm-up
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per timing window")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "conv4_speed.json")
    args = parser.parse_args()
    import torch

    from engine import omniglot
    from engine.config import RunConfig
    from engine.trainer import MetaLearner

    torch.set_num_threads(os.cpu_count() or 1)
    cases = []
    with tempfile.TemporaryDirectory() as home:
        data = omniglot.make_synthetic(Path(home) / "omniglot", alphabets=6, characters_per_alphabet=5, drawings=20)
        for first_order in (False, True):
            config = RunConfig().replace(
                task={"name": "omniglot", "ranges": {"ways": 5, "data_dir": str(data)}},
                model={"kind": "conv4", "hidden": (64, 64, 64, 64)},
                algo={"name": "fomaml" if first_order else "maml", "inner_lr": 0.4, "inner_steps": 1},
                train={"meta_batch_size": args.meta_batch, "shots": 1, "query": 15})
            learner = MetaLearner(config, args.device, threads=os.cpu_count())
            reference = MetaLearner(config, args.device, threads=os.cpu_count())
            params = {n: v.detach().clone().requires_grad_() for n, v in reference.params.items()}
            optimizer = torch.optim.Adam(params.values(), lr=1e-3)
            sync = torch.cuda.synchronize if learner.device.type == "cuda" else (lambda: None)

            def engine_step():
                learner.outer_step(metrics=False)
                sync()

            def loop_step():
                plain_loop_step(reference.model, params, optimizer, reference.sample_batch(), 0.4, first_order)
                sync()

            engine_its, loop_its = [], []
            for _ in range(args.rounds):
                engine_its.append(timed(engine_step, args.seconds))
                loop_its.append(timed(loop_step, args.seconds))
            case = {"case": f"{'first' if first_order else 'second'}-order, 1 step", "engine_its": max(engine_its),
                    "loop_its": max(loop_its), "ratio": max(engine_its) / max(loop_its),
                    "engine_rounds": engine_its, "loop_rounds": loop_its}
            cases.append(case)
            print(f"{case['case']}: engine {case['engine_its']:.2f} meta-it/s, plain loop {case['loop_its']:.2f}, "
                  f"x{case['ratio']:.2f}", flush=True)
    document = {"command": "python benchmarks/conv4_speed.py " + " ".join(sys.argv[1:]),
                "workload": f"conv4 (64 filters) on 28x28 images, 5-way 1-shot, 15 query per class, meta-batch {args.meta_batch}, "
                            "one inner step",
                "device": args.device,
                "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                            "python": platform.python_version(), "torch": torch.__version__},
                "cases": cases}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
