"""The engine stays UI-free: it imports neither textual, rich, typer, plotext nor maml_tui."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"
FORBIDDEN = {"textual", "rich", "typer", "plotext", "textual_plotext", "maml_tui"}


def test_no_engine_module_imports_ui_code():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert not offenders, offenders


def test_importing_the_whole_engine_loads_no_ui_package():
    code = (
        "import sys, engine, engine.trainer, engine.evaluate, engine.checkpoint, engine.benchmark;"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_module_has_a_docstring():
    for path in list(ENGINE.rglob("*.py")) + list((ENGINE.parent / "maml_tui").rglob("*.py")):
        assert ast.get_docstring(ast.parse(path.read_text())), path


def test_an_algorithm_lives_in_its_own_module_and_one_registry_line():
    """No engine or UI module names an algorithm other than through the registry: adding one touches
    its own module and ``engine/registry.py`` only. (The benchmark's FOMAML case, the explorer's
    pretrained-baseline key, and the cost of second order, which ``bench --cost`` and the
    meta-gradient screen measure on MAML's cheaper relatives by name, are workloads and features
    that name theirs on purpose.)"""
    from engine.registry import ALGORITHMS

    relatives = ("fomaml", "reptile", "imaml", "hfmaml")
    allowed = {("fomaml", "benchmark.py"), ("pretrain", "main.py"),
               *((name, module) for name in relatives for module in ("cost.py", "gradcompare.py"))}
    offenders = []
    for path in list(ENGINE.rglob("*.py")) + list((ENGINE.parent / "maml_tui").rglob("*.py")):
        if path.name == "registry.py":
            continue
        text = path.read_text()
        for name, entry in ALGORITHMS.items():
            if name == "maml":  # the default algorithm of a config
                continue
            own = entry.target.split(":")[0].replace(".", "/") + ".py"
            if str(path).endswith(own) or (name, path.name) in allowed:
                continue
            if f'"{name}"' in text or f"'{name}'" in text:
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders
