"""The README's promises: its test command is what CI runs, and its Python API example runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_ci_runs_the_readme_test_command():
    commands = [block.strip() for block in code_blocks("bash") if "pytest" in block]
    assert len(commands) == 1, "the README must show exactly one test command"
    assert commands[0] in (ROOT / ".ci" / "run").read_text()


def test_the_main_command_opens_the_explorer_with_the_pinned_cpu_torch():
    main = [block.strip() for block in code_blocks("bash") if block.strip().endswith("maml-tui")]
    assert len(main) == 1 and "pip install torch==2.13.0" in main[0]


def test_python_api_example_runs(tmp_path, monkeypatch):
    (example,) = [block for block in code_blocks("python") if "make_task_family" in block]
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "runs" / "api-demo" / "checkpoint.pt").is_file()


def test_readme_has_no_unfilled_placeholders():
    assert not re.search(r"\b[A-Z]+_(TABLE|SECTION)\b", README)
