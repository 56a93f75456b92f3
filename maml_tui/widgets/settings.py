"""The settings panel: compact selects for task, algorithm, model, shots, inner loop, meta-batch, seed
and the algorithm to compare with. It only shows values and reports picks; the screen decides."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select

# kept in step with engine.config (a test checks); the UI must not import the engine (torch)
TASKS = ("sinusoid", "linear", "quadratic", "sine_line", "harmonic", "tanh", "abs")
ALGORITHMS = ("maml", "fomaml", "reptile", "anil", "metasgd", "pretrain", "scratch")
CHOICES: dict[str, tuple[str, ...]] = {
    "task": TASKS,
    "algorithm": ALGORITHMS,
    "hidden": ("40,40", "80,80", "40,40,40", "20,20", "40"),
    "shots": ("1", "2", "3", "5", "10", "20", "40"),
    "inner_lr": ("0.001", "0.003", "0.01", "0.03", "0.1", "0.3", "1", "3", "10"),
    "inner_steps": ("0", "1", "2", "3", "5", "10"),
    "meta_batch_size": ("1", "4", "10", "25", "50", "100"),
    "seed": tuple(str(n) for n in range(10)),
    "compare": ("off", *ALGORITHMS),
}
LABELS = {"task": "task", "algorithm": "algorithm", "hidden": "model", "shots": "shots", "inner_lr": "inner lr",
          "inner_steps": "inner steps", "meta_batch_size": "meta-batch", "seed": "seed", "compare": "compare"}


def as_text(value) -> str:
    """How a setting value is written in the panel (``0.01``, ``10``, ``40,40``)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class SettingsPanel(Vertical):
    """One row per setting; picks come out as ``Select.Changed`` with ids ``setting-<name>``."""

    def compose(self) -> ComposeResult:
        for key, options in CHOICES.items():
            with Horizontal(classes="setting"):
                yield Label(LABELS[key])
                yield Select([(o, o) for o in options], value=options[0] if key != "compare" else "off",
                             allow_blank=False, compact=True, type_to_search=False, id=f"setting-{key}")

    def show(self, settings: dict, compare: str | None) -> None:
        """Show the engine's values without reporting them back as picks."""
        values = {**{k: as_text(v) for k, v in settings.items()}, "compare": compare or "off"}
        for key, value in values.items():
            if key not in CHOICES:
                continue
            select = self.query_one(f"#setting-{key}", Select)
            if select.value == value:
                continue
            with select.prevent(Select.Changed):
                options = CHOICES[key] if value in CHOICES[key] else (*CHOICES[key], value)
                if value not in CHOICES[key]:
                    select.set_options([(o, o) for o in options])
                select.value = value
