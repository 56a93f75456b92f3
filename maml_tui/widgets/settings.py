"""The settings panel: compact selects for task, algorithm, model, shots, inner loop, meta-batch, seed
and the algorithm to compare with. It only shows values and reports picks; the screen decides.

Which task families and algorithms exist is the engine's to say (its registry): the panel starts
with nothing to pick there and fills those selects from the catalog the engine announces when it
is ready (:meth:`SettingsPanel.set_catalog`), so no list of names is kept on this side.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select

CATALOG_KEYS = ("task", "algorithm", "compare")  # filled from the engine's catalog
CHOICES: dict[str, tuple[str, ...]] = {
    "task": (),
    "algorithm": (),
    "hidden": ("40,40", "80,80", "40,40,40", "20,20", "40"),
    "ways": ("2", "3", "4", "5", "8", "10", "20"),  # classification only; at most the family's smallest split
    "shots": ("1", "2", "3", "5", "10", "20", "40"),
    "inner_lr": ("0.001", "0.003", "0.01", "0.03", "0.1", "0.3", "1", "3", "10"),
    "inner_steps": ("0", "1", "2", "3", "5", "10"),
    "meta_batch_size": ("1", "4", "10", "25", "50", "100"),
    "seed": tuple(str(n) for n in range(10)),
    "compare": ("off",),
}
LABELS = {"task": "task", "algorithm": "algorithm", "hidden": "model", "ways": "ways", "shots": "shots", "inner_lr": "inner lr",
          "inner_steps": "inner steps", "meta_batch_size": "meta-batch", "seed": "seed", "compare": "compare"}


def as_text(value) -> str:
    """How a setting value is written in the panel (``0.01``, ``10``, ``40,40``)."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def choices_from(catalog: dict, kind: str = "regression") -> dict[str, tuple[str, ...]]:
    """The panel's choices once the engine has said which task families and algorithms exist; on a
    regression family (``kind``) without the algorithms that only classify (protonet)."""
    algorithms = tuple(a["name"] for a in catalog.get("algorithms", ())
                       if kind == "classification" or a.get("kind") != "classification")
    return {**CHOICES, "task": tuple(t["name"] for t in catalog.get("tasks", ())), "algorithm": algorithms,
            "compare": ("off", *algorithms)}


class SettingsPanel(Vertical):
    """One row per setting; picks come out as ``Select.Changed`` with ids ``setting-<name>``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choices = dict(CHOICES)
        self.catalog: dict = {}
        self.kind = "regression"  # of the task family shown: which algorithms are offered (and ways or not)
        self.max_ways = max(int(w) for w in CHOICES["ways"])

    def compose(self) -> ComposeResult:
        # every select starts blank ("…"): no made-up value is shown, and none is reported as a
        # pick, until the run's own values arrive (from its preview or from the engine)
        for key, options in CHOICES.items():
            # the ways row is a classification family's: hidden while the family is regression
            with Horizontal(classes="setting", id=f"row-{key}") as row:
                row.display = key != "ways"
                yield Label(LABELS[key])
                yield Select([(o, o) for o in options], value=Select.NULL, allow_blank=True, prompt="…",
                             compact=True, type_to_search=False, id=f"setting-{key}")

    def on_mount(self) -> None:
        from textual.widgets._select import SelectOverlay  # the open list; titled so it reads as "shots: 1 2 3"

        for key in CHOICES:
            self.query_one(f"#setting-{key}", Select).query_one(SelectOverlay).border_title = LABELS[key]

    def set_kind(self, kind: str) -> None:
        """Offer the algorithms that run on a task family of ``kind`` ("regression" or "classification"),
        and the ways row on classification."""
        if kind != self.kind:
            self.kind = kind
            self.query_one("#row-ways").display = kind == "classification"
            self.set_catalog(self.catalog)

    def set_max_ways(self, most: int) -> None:
        """Offer only the episode sizes the family's smallest split can fill (digits: 8 classes)."""
        if most == self.max_ways:
            return
        self.max_ways = most
        self.choices["ways"] = offered = self._ways_offered()
        select = self.query_one("#setting-ways", Select)
        with select.prevent(Select.Changed):
            current = select.value
            select.set_options([(o, o) for o in offered])
            if current in offered:
                select.value = current

    def _ways_offered(self) -> tuple[str, ...]:
        return tuple(w for w in CHOICES["ways"] if int(w) <= self.max_ways) or (str(self.max_ways),)

    def set_catalog(self, catalog: dict) -> None:
        """Offer the task families and algorithms the engine has."""
        self.catalog = catalog
        self.choices = choices_from(catalog, self.kind)
        self.choices["ways"] = self._ways_offered()
        for key in CATALOG_KEYS:
            select = self.query_one(f"#setting-{key}", Select)
            with select.prevent(Select.Changed):
                current = select.value
                select.set_options([(o, o) for o in self.choices[key]])
                if current in self.choices[key]:
                    select.value = current

    def show(self, settings: dict, compare: str | None) -> None:
        """Show the engine's values without reporting them back as picks."""
        values = {**{k: as_text(v) for k, v in settings.items()}, "compare": compare or "off"}
        for key, value in values.items():
            if key not in self.choices:
                continue
            select = self.query_one(f"#setting-{key}", Select)
            if select.value == value:
                continue
            with select.prevent(Select.Changed):
                options = self.choices[key] if value in self.choices[key] else (*self.choices[key], value)
                if value not in self.choices[key] or select._allow_blank:
                    select._allow_blank = False  # a real value from here on; Select has no public setter
                    select.set_options([(o, o) for o in options])
                select.value = value
