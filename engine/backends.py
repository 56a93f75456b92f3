"""The one place that chooses how a meta-loss is computed.

Each backend states what it supports through :meth:`Backend.refuses` (the model kind, the
activation, the loss, the kind of inner rates, the step count, the parameters that adapt, an
extra inner-loss term) and is used only when it supports the request; the general ``torch.func``
path takes everything else. A backend asked for by name that cannot run the request is an error,
never a silently different answer. :func:`choose` is the choice; :func:`explain` says, for
``repr``, ``maml-tui info`` and the benchmark JSON, which backend runs and why the others do not.

Backends, fastest first (``maml-tui bench`` measures each one on the default protocol):

========== ================================================================================
fused      one inner step of a relu MLP at one fixed rate, MSE, outer backward by hand
lowrank    MLP + MSE, one rate per parameter tensor (fixed or learned) and step, any step count
closed_form MLP + MSE, any rates: the hand-derived inner gradient, autograd through it
torch.func anything: vmap(grad) over tasks
========== ================================================================================
"""

from __future__ import annotations

from engine import fast_mlp
from engine.functional import Gradients, InnerLoop, dense_meta_loss, func_gradients
from engine.losses import Loss
from engine.model import Model, Params


class Backend:
    """One way to compute the outer loss of a meta-batch (and, for dense ones, inner gradients)."""

    name = "backend"
    dense = False  # holds per-task adapted parameters, so adaptation (explorer, evaluation) can use it
    gradients: Gradients | None = None

    def refuses(self, model: Model, loss: Loss, loop: InnerLoop) -> str | None:
        """Why this backend cannot run ``loop`` (None when it can)."""
        raise NotImplementedError

    def pays_off(self, model: Model, loop: InnerLoop, shots: int) -> bool:
        """Whether ``auto`` should prefer it here (it always gives the same answer when it runs)."""
        return True

    def meta_loss(self, model: Model, loss: Loss, params: Params, batch, loop: InnerLoop, record: bool = False):
        """``(outer loss, query loss after the last step, InnerResult or None)``; nothing detached."""
        return dense_meta_loss(type(self).gradients, model, loss, params, batch, loop, record)

    def __repr__(self) -> str:
        return self.name


class TorchFunc(Backend):
    name = "torch.func"
    dense = True
    gradients = staticmethod(func_gradients)

    def refuses(self, model, loss, loop):
        return None


class ClosedForm(Backend):
    name = "closed_form"
    dense = True
    gradients = staticmethod(fast_mlp.mse_gradients)

    def refuses(self, model, loss, loop):
        return fast_mlp.refuses(model, loss, loop, proximal=True)


class LowRank(Backend):
    name = "lowrank"

    def refuses(self, model, loss, loop):
        reason = fast_mlp.refuses(model, loss, loop)
        if reason is None and not loop.scalar_rates():
            reason = "it needs one rate per parameter tensor (per-entry rates break the low-rank form)"
        if reason is None and loop.steps == 0:
            reason = "there is no inner step"
        return reason

    def pays_off(self, model, loop, shots):
        # measured (maml-tui bench, and per algorithm): a rank-(steps x shots) correction beats dense
        # per-task weights by 8-16% while it stays well below the layer widths, with fixed rates and
        # second order; with learned rates or first order it is level or slower (MAML++ 2 steps:
        # 333 against 403 meta-it/s)
        fixed = all(isinstance(r, float) for rates in loop.rates for r in rates.values())
        return loop.second_order and fixed and loop.steps * shots <= max(model.hidden, default=1) // 2

    def meta_loss(self, model, loss, params, batch, loop, record=False):
        return fast_mlp.lowrank_meta_loss(model, loss, params, batch, loop, record)


class Fused(Backend):
    name = "fused"

    def refuses(self, model, loss, loop):
        return fast_mlp.fused_refuses(model, loss, loop)

    def meta_loss(self, model, loss, params, batch, loop, record=False):
        return fast_mlp.fused_meta_loss(model, loss, params, batch, loop, record)


BACKENDS: dict[str, Backend] = {b.name: b for b in (Fused(), LowRank(), ClosedForm(), TorchFunc())}
NAMES = ("auto", *BACKENDS)
GENERAL = BACKENDS["torch.func"]


def check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    return name


def choose(requested: str, model: Model, loss: Loss, loop: InnerLoop, shots: int) -> Backend:
    """The backend that computes this meta-loss: the one asked for, or under ``auto`` the fastest
    that supports the request and pays off at this size."""
    if requested != "auto":
        backend = BACKENDS[check_name(requested)]
        reason = backend.refuses(model, loss, loop)
        if reason:
            raise ValueError(f"the {backend.name} backend cannot run this: {reason}")
        return backend
    for backend in BACKENDS.values():
        if backend.refuses(model, loss, loop) is None and backend.pays_off(model, loop, shots):
            return backend
    return GENERAL


def choose_dense(requested: str, model: Model, loss: Loss, loop: InnerLoop) -> Backend:
    """The backend for adaptation without differentiation (per-step parameters are kept)."""
    if requested in ("torch.func", "closed_form"):
        return choose(requested, model, loss, loop, shots=0)
    fast = BACKENDS["closed_form"]
    return fast if fast.refuses(model, loss, loop) is None else GENERAL


def explain(requested: str, model: Model, loss: Loss, loop: InnerLoop, shots: int) -> dict[str, str]:
    """Every backend with "runs", "accepts", "accepts (does not pay off at this size)" or the reason it refuses."""
    try:
        chosen = choose(requested, model, loss, loop, shots).name
    except ValueError as error:
        chosen = None
        refusal = str(error)
    out = {}
    for name, backend in BACKENDS.items():
        reason = backend.refuses(model, loss, loop)
        if name == chosen:
            out[name] = "runs"
        elif reason:
            out[name] = f"refuses: {reason}"
        elif requested == "auto" and not backend.pays_off(model, loop, shots):
            out[name] = "accepts (does not pay off at this size)"
        else:
            out[name] = "accepts"
    if chosen is None:
        out["error"] = refusal
    return out
