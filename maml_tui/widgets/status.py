"""The one-line status bar: device (and its memory in use on a GPU), algorithm, outer step, meta-it/s, run state and the last message."""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static


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
        f = self.fields
        parts = [f"[b]{escape(str(f['device']))}[/b]"]
        if f["memory"]:  # on a GPU: what this process holds of it
            used, total = f["memory"]
            parts.append(f"{used:.1f}/{total:.0f} GiB")
        parts.append(escape(str(f["algorithm"])))
        parts.append("step —" if f["step"] is None else f"step {f['step']:,}")
        parts.append("— meta-it/s" if not f["its"] else f"{f['its']:,.0f} meta-it/s")
        state = f["state"]
        style = {"running": "b $success", "paused": "$warning", "stopped": "b $error"}.get(state.split()[0] if state else "", "$text-muted")
        parts.append(f"[{style}]{escape(state)}[/]")
        if f["saved"]:
            parts.append(f"[$warning]{escape(f['saved'])}[/]" if "unsaved" in f["saved"] else escape(f["saved"]))
        line = " · ".join(parts)
        if f["message"]:
            colour = {"error": "$error", "warning": "$warning"}.get(f["severity"], "$text-muted")
            line += f"  [{colour}]{escape(f['message'])}[/]"
        self.update(line, layout=False)  # one line, always: no layout pass (it would redraw every plot)
