"""The meta-gradient screen (key ``g``): the exact meta-gradient against its cheaper estimates, and
the sharpness of the current task.

On the meta-batch the last outer step trained on (before any, one drawn like the next), at the
current theta, the engine computes the exact second-order MAML meta-gradient with the run's inner
rate and steps, and the first-order, Reptile, iMAML and finite-difference ones; each row gives the
cosine to the exact one, the norm ratio, the time it took and the peak memory it allocated (the
ruler of ``maml-tui bench --cost``). It refreshes at most every 2 s while training runs, and only while this screen is open.
Below, ``alpha * lambda_max`` of the current task's support loss at theta and theta', with what it
means. Escape, ``g`` or ``q`` goes back; space, ``o``, ``i`` and ``n`` act as on the main screen.
"""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

EXPLAIN = (
    "[b]cosine[/b] 1 = the exact meta-gradient's direction (0: unrelated); [b]norm ratio[/b] 1 = its length. "
    "Exact MAML is (I − αH)∇L_query(θ′) per inner step; first order drops the Hessian H, so it differs where "
    "α·H is not small; finite differences jump where a ReLU switches. [b]memory[/b]: the peak the allocator "
    "handed out while it ran, as maml-tui bench --cost measures it."
)
EDGE = (
    "A step of rate α on curvature λ scales the error by |1 − αλ|, above 1 past α·λ = 2. MAML learns an "
    "initialisation near that edge, where repeated inner steps stop converging: some tasks blow up."
)


def number(value, digits: int = 3) -> str:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"


def size(value) -> str:
    if value is None:
        return "—"
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def edge_markup(value: float) -> str:
    """``alpha * lambda_max`` in the warning colour past the edge (2)."""
    text = number(value, 3)
    return f"[b red]{text}[/]" if isinstance(value, float) and math.isfinite(value) and abs(value) > 2 else f"[b]{text}[/]"


def sharpness_lines(view: dict | None) -> list[str]:
    """What the screen says about the current task's sharpness."""
    if view is None:
        return ["sharpness: waiting for the engine…"]
    if view.get("error") or view.get("reason"):
        return [f"sharpness: {view.get('error') or view.get('reason')}"]
    alpha = view["inner_lr"]
    theta = view["at_theta"]
    line = (f"[b]sharpness[/b] of task #{view['task_number']}'s support loss: α·λ_max {edge_markup(alpha * theta)} at θ "
            f"(λ_max {number(theta, 4)}, α = {alpha:g})")
    taken = view["inner_steps_taken"]
    if taken and math.isfinite(view["at_adapted"]):
        line += f", {edge_markup(alpha * view['at_adapted'])} at θ′ after {taken} step{'s' if taken != 1 else ''}"
    return [line, f"[dim]{EDGE}[/]"]


def compact_sharpness(view: dict | None, classification: bool = False) -> str:
    """The indicator beside the fit: ``α·λmax 2.75 → 1.9`` (theta, then theta' when steps were taken)."""
    if view is None or view.get("error") or view.get("reason") or not math.isfinite(view.get("at_theta", math.nan)):
        return ""
    alpha = view["inner_lr"]
    text = f"α·λmax {edge_markup(alpha * view['at_theta'])}"
    if view["inner_steps_taken"] and math.isfinite(view["at_adapted"]):
        text += f" → {edge_markup(alpha * view['at_adapted'])}"
    return text


class GradientScreen(Screen[None]):
    """A live table of meta-gradients and the current task's sharpness."""

    BINDINGS = [Binding("escape,g,q", "close", "Back"), Binding("space", "run", "Run/pause"),
                Binding("o", "outer", "Outer step"), Binding("i", "inner", "Inner step"), Binding("n", "task", "New task")]

    def __init__(self, main) -> None:
        super().__init__()
        self.main = main
        self.shown: tuple | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog", id="gradient-screen"):
            yield Static("", id="gradient-title")
            yield Static("", id="gradient-table")
            yield Static("", id="gradient-sharpness")
            yield Static(f"[dim]{EXPLAIN}[/]", id="gradient-explain")
            yield Static("[dim][b]space[/b] run  [b]o[/b] outer step  [b]i[/b] inner step  [b]n[/b] new task  "
                         "[b]g[/b]/[b]esc[/b] back · live, every 2 s at most[/]", id="gradient-keys")

    def on_mount(self) -> None:
        self.main.gradients = None  # an older comparison is not about the present theta
        self.main.send("the meta-gradient view", "gradient_view", open=True)
        self.refresh_view()
        self.set_interval(0.25, self.refresh_view)

    def refresh_view(self) -> None:
        view, sharp, snapshot = self.main.gradients, self.main.sharpness, self.main.snapshot
        key = (id(view), id(sharp), snapshot["step"] if snapshot else None, self.app.size.width)
        if key == self.shown:
            return
        self.shown = key
        self.query_one("#gradient-sharpness", Static).update("\n".join(sharpness_lines(sharp)))
        title = self.query_one("#gradient-title", Static)
        table = self.query_one("#gradient-table", Static)
        if view is None:
            title.update("[b]meta-gradients[/b]: computing on the meta-batch…")
            table.update("")
            return
        if view.get("error"):
            title.update(f"[b]meta-gradients[/b]: {view['error']}")
            table.update("")
            return
        which = (f"its meta-batch ({view['tasks']} {view['task']} tasks)" if view["batch_source"] == "last"
                 else f"a meta-batch like the next one ({view['tasks']} {view['task']} tasks; no outer step yet)")
        steps = view["inner_steps"]
        behind = ""
        if snapshot is not None and snapshot["step"] != view["step"]:
            behind = f" [dim](training is at step {snapshot['step']:,})[/]"
        title.update(f"[b]meta-gradients[/b] at θ of outer step {view['step']:,}{behind} on {which} · "
                     f"α = {view['inner_lr']:g}, {steps} inner step{'s' if steps != 1 else ''}")
        table.update(self.table_text(view["rows"], self.app.size.width - 8))

    @staticmethod
    def table_text(rows: list[dict], width: int) -> str:
        label = max(24, min(28, width - 46))
        head = f"[b]{'estimate':<{label}} {'cosine':>7} {'norm ratio':>10} {'time':>9} {'memory':>10}[/b]"
        lines = [head]
        for row in rows:
            name = row["label"][:label]
            if row["reason"]:
                reason = row["reason"]
                room = max(width - label - 1, 20)
                lines.append(f"{name:<{label}} [dim]{reason if len(reason) <= room else reason[:room - 1] + '…'}[/]")
                continue
            lines.append(f"{name:<{label}} {number(row['cosine'], 3):>7} {number(row['norm_ratio'], 3):>10} "
                         f"{duration(row['seconds']):>9} {size(row['peak_bytes']):>10}")
        return "\n".join(lines)

    def action_run(self) -> None:
        self.main.action_toggle_run()

    def action_outer(self) -> None:
        self.main.action_outer_step()

    def action_inner(self) -> None:
        self.main.action_inner_step()

    def action_task(self) -> None:
        self.main.action_new_task()

    def action_close(self) -> None:
        self.main.send("the meta-gradient view", "gradient_view", open=False)
        self.dismiss(None)
