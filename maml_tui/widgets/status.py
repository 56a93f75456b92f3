"""The one-line status bar: device (and its memory in use on a GPU), algorithm, outer step,
meta-it/s, run state, where the model is kept, and the last message.

It always fits its width: when the fields and the message do not fit together, the message keeps
the step, the state and the saved / unsaved word beside it and drops the rest; a message longer than the line ends with
"… N: in full" (the messages screen keeps every message whole).
"""

from __future__ import annotations

from rich.markup import escape
from textual.content import Content
from textual.widgets import Static

MORE = " … N: in full"


class StatusBar(Static):
    """Shows what the engine is doing; ``update_status`` changes only the fields given."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=True)
        self.fields: dict = {}
        self.update_status(device="…", memory=None, algorithm="…", step=None, its=None, state="starting engine…",
                           saved="", message="", severity="information")

    def update_status(self, **changes) -> None:
        if self.fields and all(self.fields.get(k) == v for k, v in changes.items()):
            return
        self.fields.update(changes)
        self.update(self.line(self.size.width or 80), layout=False)  # one line, always: no layout pass

    def on_resize(self) -> None:
        self.update(self.line(self.size.width or 80), layout=False)

    def line(self, width: int) -> str:
        f = self.fields
        step = "step —" if f["step"] is None else f"step {f['step']:,}"
        state = f["state"]
        style = {"running": "b $success", "paused": "$warning", "stopped": "b $error"}.get(state.split()[0] if state else "", "$text-muted")
        state_part = f"[{style}]{escape(state)}[/]"
        parts = [f"[b]{escape(str(f['device']))}[/b]"]
        if f["memory"]:  # on a GPU: what this process holds of it
            used, total = f["memory"]
            parts.append(f"{used:.1f}/{total:.0f} GiB")
        parts += [escape(str(f["algorithm"])), step, "— meta-it/s" if not f["its"] else f"{f['its']:,.0f} meta-it/s", state_part]
        essential = [step, state_part]  # what stays beside a long message
        if f["saved"]:
            saved = f"[$warning]{escape(f['saved'])}[/]" if "unsaved" in f["saved"] else escape(f["saved"])
            parts.append(saved)
            essential.append(saved)
        full, short = " · ".join(parts), " · ".join(essential)
        message = f["message"]
        if not message:
            return full
        colour = {"error": "$error", "warning": "$warning"}.get(f["severity"], "$text-muted")
        for fields in (full, short):
            room = width - _cells(fields) - 2
            if len(message) <= room:
                return f"{fields}  [{colour}]{escape(message)}[/]"
        room = max(width - _cells(short) - 2 - len(MORE), 10)
        return f"{short}  [{colour}]{escape(message[:room].rstrip())}[/][b]{MORE}[/b]"


def _cells(markup: str) -> int:
    return Content.from_markup(markup).cell_length
