"""The hostile-input sweep of the README's reliability section: every option of every command with
hostile values, then hundreds of corrupted run directories, each in a process of its own.

Each try is a child process forked from one that has already imported torch and the CLI (so a
try costs milliseconds, not the seconds of an import) and runs the real entry point,
``maml_tui.launch.main``, with its own argv, in a fresh working directory, with a time limit. A try is:

* ``clean``: refused with exit 1 and exactly one line ``error: ...`` on stderr, or with exit 2 and the
  parser's own "Invalid value" (a value that is not of the flag's type), or accepted when valid;
* ``traceback``: a Python traceback anywhere in its output, or an exit code that is none of ours;
* ``hang``: an invalid value still running at the time limit (a valid one, such as a ten-billion-step
  run, is stopped there and counted as ``valid, stopped``);
* ``native crash``: ended by a signal (a segfault, an abort) rather than by exiting;
* ``accepted nonsense``: exit 0 for a value outside what the flag's ``--help`` allows.

For the corrupted run directories each case is opened three ways: ``eval``, ``train --resume`` and
the explorer's session (``ExplorerSession.open``, what the interface's engine process runs). The
checkpoint must be byte-identical after every refusal. The counts go to
``benchmarks/hostile_sweep.json``; ``--verbose`` prints every try that was not clean.

    python benchmarks/hostile_sweep.py [--jobs 2] [--only flags|runs]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VALUES = ["-1", "0", "-99999999999", "99999999999", str(2**64), str(10**30), "1.5", "1e308", "1e-320", "nan", "inf",
          "-inf", "abc", "", "ünïcødé✓", "x" * 300, "[/]", "[bold]x", "a\nb"]
TRY_SECONDS = 40.0


# -- what each flag allows (as its --help says) -----------------------------------------------------
def _int(text):
    try:
        return int(text)
    except ValueError:
        return None


def _float(text):
    try:
        return float(text)
    except ValueError:
        return None


def whole(low, high):
    return lambda v: _int(v) is not None and low <= _int(v) <= high


def real(low, high, low_open=True):
    def ok(v):
        x = _float(v)
        return x is not None and x == x and (low < x if low_open else low <= x) and x <= high
    return ok


def name_ok(v):
    return bool(v.strip()) and v not in (".",) and len(v.encode()) <= 255 and "\n" not in v


def hidden_ok(v):
    if v.strip() in ("", "none", "0"):
        return True
    try:
        sizes = [int(p) for p in v.replace("x", ",").split(",")]
    except ValueError:
        return False
    return all(1 <= s <= 65_536 for s in sizes) and len(sizes) <= 64


NEVER = lambda v: False  # noqa: E731  (none of the hostile values is a name, a device or an existing run)

FLAGS = {
    "train": {"--task": NEVER, "--algo": NEVER, "--steps": whole(0, 10**12), "--meta-batch": whole(1, 100_000),
              "--shots": whole(1, 100_000), "--query": whole(1, 100_000), "--inner-steps": whole(0, 1_000),
              "--inner-lr": real(0, 1e6), "--option": NEVER, "--outer-lr": real(0, 1e3), "--hidden": hidden_ok,
              "--activation": NEVER, "--init": NEVER, "--seed": whole(0, 2**63 - 1), "--device": NEVER,
              "--threads": whole(1, 1_024), "--out": name_ok, "--resume": NEVER, "--log-every": whole(1, 10**12),
              "--checkpoint-every": whole(1, 10**12), "--backend": NEVER, "--ways": NEVER, "--model": NEVER,
              "--data-dir": NEVER},  # on the sinusoid: --ways and --data-dir are refused for a regression family
    "train-digits": {"--ways": whole(2, 8), "--model": NEVER},
    "download": {"DATASET": NEVER, "--data-dir": NEVER},  # no network here: every download ends in its sentence
    "eval": {"RUN": NEVER, "--shots": whole(1, 100_000), "--steps": whole(0, 1_000), "--tasks": whole(1, 1_000_000),
             "--query": whole(1, 100_000), "--seed": whole(0, 2**63 - 1), "--inner-lr": real(0, 1e6), "--device": NEVER},
    "bench": {"--seconds": real(0.05, 3600, low_open=False), "--device": NEVER, "--meta-batch": whole(1, 10_000),
              "--out": name_ok},
    "info": {"--device": NEVER, "--algo": NEVER, "--inner-steps": whole(0, 1_000), "--shots": whole(1, 100_000),
             "--activation": NEVER},
    "explore": {"RUN": NEVER, "--device": NEVER},
}
SMALL_TRAIN = ["--steps", "3", "--meta-batch", "2", "--shots", "3", "--query", "3", "--hidden", "8,8", "--log-every", "1",
               "--checkpoint-every", "2"]


def flag_tries(good_run: Path) -> list[dict]:
    tries = []
    for command, flags in FLAGS.items():
        for flag, valid in flags.items():
            for value in VALUES:
                if command == "train":
                    base = ["train"] if flag == "--resume" else ["train", *SMALL_TRAIN, *([] if flag == "--out" else ["--out", "run"])]
                elif command == "train-digits":
                    base = ["train", "--task", "digits", *SMALL_TRAIN, "--out", "run"]
                elif command == "download":
                    base = ["download"] + ([] if flag == "DATASET" else ["omniglot"])
                elif command == "eval":
                    base = ["eval"] + ([] if flag == "RUN" else [str(good_run)]) + ["--tasks", "5", "--steps", "1", "--query", "5"]
                elif command == "bench":
                    base = ["bench", "--seconds", "0.05", "--meta-batch", "2"]
                else:
                    base = [command]
                argv = [*base, value] if flag in ("RUN", "DATASET") else [*base, flag, value]
                tries.append({"family": "flags", "case": f"{command} {flag} {value[:20]!r}", "argv": argv,
                              "valid": valid(value)})
    return tries


# -- corrupted run directories ---------------------------------------------------------------------
JUNK = [None, "text", -1, 1.5, 10**30, [], {}, float("nan"), True]


def config_cases(document: dict) -> list[tuple[str, object]]:
    """(name, change) pairs: every field of config.json replaced by every kind of junk, and broken files."""
    cases = []

    def fields(value, path=()):
        if path:
            yield path
        if isinstance(value, dict):
            for key, item in value.items():
                yield from fields(item, (*path, key))

    for path in fields(document):
        for junk in JUNK:
            def change(doc, path=path, junk=junk):
                place = doc
                for key in path[:-1]:
                    place = place[key]
                place[path[-1]] = junk
                return doc
            cases.append((f"config.json {'.'.join(path)} = {junk!r}"[:80], ("json", change)))
    for name, text in [("empty", ""), ("not JSON", "{not json"), ("a list", "[]"), ("binary", "\x00\xff\xfe garbage"),
                       ("nested 100000 deep", "[" * 100_000), ("huge hidden", None), ("a newer version", None),
                       ("version 0", None), ("no format", None), ("ranges huge", None), ("ranges NaN", None)]:
        cases.append((f"config.json {name}", ("text", text, name)))
    cases += [("config.json missing", ("missing", "config.json")), ("config.json a directory", ("directory", "config.json"))]
    return cases


def checkpoint_cases(payload: dict) -> list[tuple[str, object]]:
    import torch

    cases = []
    for key in ("format", "version", "step", "params", "optimizer", "rng", "buffers", "config"):
        for junk in [None, "x", -1, 10**30, torch.tensor(float("nan")), {}, [], torch.zeros(3, 3)]:
            label = f"tensor{tuple(junk.shape)}" if torch.is_tensor(junk) else repr(junk)
            cases.append((f"checkpoint {key} = {label}", ("payload", lambda p, key=key, junk=junk: p.update({key: junk}))))
    for name in payload["params"]:
        for label, make in [("wrong shape", lambda v: torch.zeros(3, 3)), ("NaN", lambda v: torch.full_like(v, float("nan"))),
                            ("inf", lambda v: torch.full_like(v, float("inf"))), ("complex", lambda v: v.to(torch.complex64)),
                            ("integer", lambda v: v.to(torch.int64)), ("a string", lambda v: "weights"),
                            ("float64", lambda v: v.double()), ("1e30", lambda v: torch.full_like(v, 1e30))]:
            cases.append((f"checkpoint params.{name} {label}",
                          ("payload", lambda p, name=name, make=make: p["params"].update({name: make(p["params"][name])}))))
    state = payload["optimizer"]["state"]
    for index in list(state)[:2]:
        for moment in ("exp_avg", "exp_avg_sq"):
            for label, make in [("wrong shape", lambda v: torch.zeros(3, 3)), ("NaN", lambda v: torch.full_like(v, float("nan"))),
                                ("negative", lambda v: torch.full_like(v, -1.0)), ("a string", lambda v: "m")]:
                cases.append((f"checkpoint Adam {moment}[{index}] {label}",
                              ("payload", lambda p, i=index, m=moment, make=make: p["optimizer"]["state"][i].update({m: make(p["optimizer"]["state"][i][m])}))))
        for label, value in [("inf", torch.tensor(float("inf"))), ("negative", torch.tensor(-3.0)), ("a string", "s"),
                             ("fraction", torch.tensor(2.5))]:
            cases.append((f"checkpoint Adam step[{index}] {label}",
                          ("payload", lambda p, i=index, value=value: p["optimizer"]["state"][i].update(step=value))))
    for key, value in [("lr", float("nan")), ("lr", -1.0), ("betas", None), ("eps", "e"), ("params", []), ("params", 5),
                       ("weight_decay", float("inf")), ("fused", "yes")]:
        cases.append((f"checkpoint Adam param_groups[0].{key} = {value!r}",
                      ("payload", lambda p, key=key, value=value: p["optimizer"]["param_groups"][0].update({key: value}))))
    for label, value in [("wrong size", torch.zeros(7, dtype=torch.uint8)), ("float", torch.zeros(5056)), ("a string", "seed")]:
        cases.append((f"checkpoint rng.tasks {label}", ("payload", lambda p, value=value: p["rng"].update(tasks=value))))
    for fraction in (0.0, 0.1, 0.5, 0.9, 0.999):
        cases.append((f"checkpoint.pt truncated to {fraction:.1%}", ("bytes", "truncate", fraction)))
    for flips in (1, 8, 64):
        cases.append((f"checkpoint.pt {flips} bytes flipped", ("bytes", "flip", flips)))
    cases += [("checkpoint.pt empty", ("bytes", "truncate", 0.0)), ("checkpoint.pt not a zip", ("bytes", "text", "hello")),
              ("checkpoint.pt missing", ("missing", "checkpoint.pt")), ("checkpoint.pt a directory", ("directory", "checkpoint.pt")),
              ("checkpoint.pt pickled code", ("bytes", "pickle", None))]
    return cases


def other_cases() -> list[tuple[str, object]]:
    lines = {"truncated last line": '{"step": 40, "query_lo', "garbage lines": "not json\n[1,2]\n{}\n",
             "string steps": '{"step": "ten"}\n', "negative step": '{"step": -4}\n', "binary": "\x00\x01\xff\n",
             "a huge line": '{"step": 41, "x": "' + "y" * 2_000_000 + '"}\n', "nested deep": "[" * 100_000 + "\n",
             "NaN losses": '{"step": 42, "query_loss_before": NaN, "query_loss_after": Infinity, "meta_grad_norm": NaN}\n'}
    cases = [(f"metrics.jsonl {name}", ("append", "metrics.jsonl", text)) for name, text in lines.items()]
    cases += [("metrics.jsonl missing", ("missing", "metrics.jsonl")), ("metrics.jsonl a directory", ("directory", "metrics.jsonl")),
              ("preview.json garbage", ("append", "preview.json", "}}}")), ("preview.json missing", ("missing", "preview.json")),
              ("temporary files left by a killed save", ("tmp", None)), ("the run written by another process", ("locked", None))]
    return cases


def make_case(run: Path, case) -> object:
    """Apply one corruption to a copy of the good run; returns a handle to keep alive (a lock holder)."""
    import torch

    kind = case[0]
    if kind == "json":
        path = run / "config.json"
        path.write_text(json.dumps(case[1](json.loads(path.read_text()))))
    elif kind == "text":
        _, text, name = case
        path = run / "config.json"
        document = json.loads(path.read_text())
        special = {"huge hidden": lambda d: d["config"]["model"].update(hidden=[10**9, 10**9]),
                   "a newer version": lambda d: d.update(version=99), "version 0": lambda d: d.update(version=0),
                   "no format": lambda d: d.pop("format"),
                   "ranges huge": lambda d: d["config"]["task"].update(ranges={"amplitude": [0, 1e300]}),
                   "ranges NaN": lambda d: d["config"]["task"].update(ranges={"x": [float("nan"), 1]})}
        if name in special:
            special[name](document)
            text = json.dumps(document)
        path.write_text(text, errors="surrogateescape")
    elif kind == "payload":
        path = run / "checkpoint.pt"
        payload = torch.load(path, weights_only=True)
        case[1](payload)
        torch.save(payload, path)
    elif kind == "bytes":
        path = run / "checkpoint.pt"
        data = path.read_bytes()
        if case[1] == "truncate":
            path.write_bytes(data[:int(len(data) * case[2])])
        elif case[1] == "flip":
            damaged = bytearray(data)
            for index in range(case[2]):
                damaged[(index * 7919 + 1013) % len(damaged)] ^= 0x5A
            path.write_bytes(bytes(damaged))
        elif case[1] == "text":
            path.write_text(case[2])
        else:  # a pickle whose loading would run code (weights-only loading must refuse it)
            import pickle

            class Evil:
                def __reduce__(self):
                    return (os.system, ("touch PWNED",))
            path.write_bytes(pickle.dumps({"format": "maml-tui-checkpoint", "evil": Evil()}))
    elif kind == "missing":
        (run / case[1]).unlink()
    elif kind == "directory":
        (run / case[1]).unlink()
        (run / case[1]).mkdir()
    elif kind == "append":
        with open(run / case[1], "a", errors="surrogateescape") as file:
            file.write(case[2])
    elif kind == "tmp":
        (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a save")
        (run / ".metrics.jsonl.def456.tmp").write_text("{")
    elif kind == "locked":
        from engine.checkpoint import RunLock

        return RunLock(run, "maml-tui train (the sweep's other writer)").acquire()
    return None


# -- running tries ---------------------------------------------------------------------------------
def _child(argv: list[str], workdir: Path, stdout, stderr) -> None:
    os.chdir(workdir)
    os.dup2(stdout.fileno(), 1)
    os.dup2(stderr.fileno(), 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    code = 0
    try:
        if argv[0] == "@session":  # what the explorer's engine process does when it opens a run
            from engine.errors import MamlTuiError
            from engine.explorer import ExplorerSession

            try:
                session = ExplorerSession.open(argv[1], "cpu")
                session.snapshot()
                session.preview()
            except MamlTuiError as error:
                sys.stderr.write(f"error: {error}\n")
                code = 1
        else:
            from maml_tui.launch import main

            sys.argv = ["maml-tui", *argv]
            main()
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else (0 if end.code is None else 1)
    except BaseException:  # noqa: BLE001  (what the sweep looks for)
        import traceback

        traceback.print_exc()
        code = 99
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Running:
    def __init__(self, item: dict, scratch: Path):
        self.item = item
        self.workdir = Path(tempfile.mkdtemp(dir=scratch))
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.start = time.perf_counter()
        self.pid = os.fork()
        if self.pid == 0:
            _child(item["argv"], self.workdir, self.out, self.err)

    def poll(self, limit: float) -> dict | None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        killed = False
        if pid == 0:
            if time.perf_counter() - self.start < limit:
                return None
            os.kill(self.pid, signal.SIGKILL)
            _, status = os.waitpid(self.pid, 0)
            killed = True
        self.out.seek(0)
        self.err.seek(0)
        stdout = self.out.read().decode(errors="replace")
        stderr = self.err.read().decode(errors="replace")
        return {**self.item, "killed": killed, "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) and not killed else None,
                "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None, "stdout": stdout[-2000:],
                "stderr": stderr[-2000:], "seconds": time.perf_counter() - self.start,
                "pwned": (self.workdir / "PWNED").exists()}


def classify(result: dict) -> str:
    text = result["stdout"] + result["stderr"]
    if result["signal"] is not None:
        return "native crash"
    if result["killed"]:
        return "valid, stopped" if result.get("valid") else "hang"
    if "Traceback" in text or result["code"] not in (0, 1, 2, 130) or result.get("pwned"):
        return "traceback"
    if result["code"] == 0:
        return "accepted" if result.get("valid", True) else "accepted nonsense"
    if result["code"] == 1:
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        notes = [line for line in lines if line.startswith("note: ")]
        errors = [line for line in lines if not line.startswith("note: ")]
        return "clean" if len(errors) == 1 and errors[0].startswith("error: ") and len(notes) == len(lines) - 1 else "not one sentence"
    if result["code"] == 2:
        parser = ("Invalid value", "requires an argument", "No such option", "Missing argument")
        return "clean" if any(words in result["stderr"] for words in parser) else "not one sentence"
    return "clean"


def run_all(items: list[dict], jobs: int, scratch: Path, before=None, after=None) -> list[dict]:
    results, pending, running = [], list(items), []
    while pending or running:
        while pending and len(running) < jobs:
            item = pending.pop(0)
            if before:
                before(item)
            running.append(Running(item, scratch))
        time.sleep(0.005)
        for job in list(running):
            result = job.poll(TRY_SECONDS)
            if result is not None:
                running.remove(job)
                result["outcome"] = classify(result)
                if after:
                    after(result)
                results.append(result)
    return results


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", choices=("flags", "runs"))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "hostile_sweep.json")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="maml-tui-sweep-"))
    os.environ["MAML_TUI_STATE_DIR"] = str(scratch / "state")
    os.environ["MAML_TUI_CONFIG_DIR"] = str(scratch / "config")
    os.environ["MAML_TUI_DATA_DIR"] = str(scratch / "data")  # download tries land here, never in the home directory
    import shutil

    import torch

    import maml_tui.cli  # noqa: F401  (imported once, before the forks)
    import maml_tui.launch  # noqa: F401
    from engine.config import RunConfig
    from engine.explorer import ExplorerSession  # noqa: F401
    from engine.trainer import train

    torch.set_num_threads(1)
    good = scratch / "good"
    config = RunConfig().replace(model={"hidden": (8, 8)}, train={"steps": 20, "meta_batch_size": 2, "shots": 3, "query": 3,
                                                                  "log_every": 5, "checkpoint_every": 10})
    train(config, good, device="cpu")
    document = {"command": "python benchmarks/hostile_sweep.py " + " ".join(sys.argv[1:]), "families": {}}
    started = time.perf_counter()
    failures = []

    if args.only in (None, "flags"):
        good_digest = digest(good / "checkpoint.pt")
        results = run_all(flag_tries(good), args.jobs, scratch)
        counts = {}
        for r in results:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        counts["tries"] = len(results)
        counts["good run's checkpoint byte-identical"] = digest(good / "checkpoint.pt") == good_digest
        document["families"]["flags"] = counts
        document["accepted flags"] = sorted(r["case"] for r in results if r["outcome"] in ("accepted", "valid, stopped"))
        failures += [r for r in results if r["outcome"] not in ("clean", "accepted", "valid, stopped")]
        print("flags:", counts, flush=True)

    if args.only in (None, "runs"):
        payload = torch.load(good / "checkpoint.pt", weights_only=True)
        cases = config_cases(json.loads((good / "config.json").read_text())) + checkpoint_cases(payload) + other_cases()
        items, holders, digests = [], {}, {}
        for index, (name, case) in enumerate(cases):
            for how in ("eval", "resume", "session"):
                run = scratch / "runs" / f"{index}-{how}"
                argv = {"eval": ["eval", str(run), "--tasks", "5", "--steps", "1", "--query", "5"],
                        "resume": ["train", "--resume", str(run), "--steps", "25"],
                        "session": ["@session", str(run)]}[how]
                items.append({"family": "runs", "case": name, "how": how, "argv": argv, "run": str(run), "spec": case})

        def before(item):
            run = Path(item["run"])
            shutil.copytree(good, run)
            holders[item["run"]] = make_case(run, item["spec"])
            digests[item["run"]] = digest(run / "checkpoint.pt")

        def after(result):
            run = Path(result["run"])
            result["checkpoint byte-identical"] = digest(run / "checkpoint.pt") == digests[result["run"]]
            if result["outcome"] == "clean" and not result["checkpoint byte-identical"]:
                result["outcome"] = "changed a refused run"
            lock = holders.pop(result["run"], None)
            if lock is not None:
                lock.release()
            result.pop("spec")
            shutil.rmtree(run, ignore_errors=True)

        results = run_all(items, args.jobs, scratch, before, after)
        counts = {}
        for r in results:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        counts["corrupted run directories"] = len(cases)
        counts["tries (each opened by eval, train --resume and the explorer's session)"] = len(results)
        counts["refused, checkpoint byte-identical"] = sum(r["outcome"] == "clean" and r["checkpoint byte-identical"] for r in results)
        document["families"]["runs"] = counts
        document["accepted runs"] = sorted({f"{r['case']} ({r['how']})" for r in results if r["outcome"] == "accepted"})
        failures += [r for r in results if r["outcome"] not in ("clean", "accepted")]
        print("runs:", counts, flush=True)

    document["seconds"] = round(time.perf_counter() - started, 1)
    document["not clean"] = [{k: r[k] for k in ("family", "case", "argv", "outcome", "code", "signal", "stderr")} for r in failures]
    for r in failures:
        r["argv"] = [a[:60] for a in r["argv"]]
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    for r in failures if args.verbose else failures[:20]:
        print(f"{r['outcome']}: {r['case']} {r['argv'][:6]} -> code {r['code']} signal {r['signal']}: {r['stderr'][-300:]!r}")
    print(f"{len(failures)} tries not clean. Wrote {args.out} ({document['seconds']} s)")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
