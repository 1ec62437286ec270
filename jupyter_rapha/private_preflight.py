"""Preflight of a DP cell (one that calls ``rapha.fit_private``): its model and loss are
exported here, as the edge's job process exports them, and checked with the very check
the edge's trainer runs (``protocol/private_program.py``), before anything is signed or
sent.

The cell runs here in a fresh namespace (it must be self-contained: the edge sees only
the cell), with a ``rapha`` whose ``fit_private`` takes the model and the loss and stops
the cell there; ``rapha.loader``, ``log`` and ``save`` are refused, as in DP mode at the
edge. The model gets Opacus's ``ModuleValidator.fix`` where it is safe (BatchNorm becomes
GroupNorm, as at the edge, and the layer is named), the loss is computed on two
schema-shaped synthetic records and must be a floating-point scalar, and the program
``(*fields) -> loss`` is exported with ``torch.export`` (dim 0 of every field one dynamic
batch dimension) and checked. Nothing real is read and nothing leaves.

The edge still decides: it exports and checks again whatever the cell hands over there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from .local import CELL_FILENAME, LocalRuntime, _cell_failed, _select, synthetic_records
from .private_local import fix_in_place
from .protocol.errors import BadInput
from .protocol.private import PrivateRequestError, parse_private_request
from .protocol.private_program import PrivateProgramError, check_private_program, operator_count

EXAMPLE_RECORDS = 2  # a batch of one would let export fix the batch dimension at 1
REFUSED_IN_DP_MODE = ("in DP mode the cell never reads records nor writes outputs: rapha.{name} is refused; "
                      "hand the model and the loss to rapha.fit_private and let the edge's trainer train them")


@dataclass(frozen=True)
class ProgramCheck:
    """What the preflight found: ``refusal`` (what to change) when the edge's trainer could
    not train the cell's model privately; ``notes`` what was changed or shown."""

    refusal: str | None
    notes: tuple[str, ...] = ()

    @property
    def trainable(self) -> bool:
        return self.refusal is None


class _Handed(Exception):
    """``rapha.fit_private`` was reached: the model, the loss and the settings."""

    def __init__(self, model: Any, loss_fn: Any, settings: dict[str, Any]) -> None:
        super().__init__("fit_private")
        self.model, self.loss_fn, self.settings = model, loss_fn, settings


class PreflightRapha(LocalRuntime):
    """The ``rapha`` of a DP cell in the preflight: ``fit_private`` hands over and stops."""

    def loader(self, *args: Any, **kwargs: Any) -> Any:
        raise BadInput(REFUSED_IN_DP_MODE.format(name="loader"))

    def log(self, **metrics: Any) -> None:
        raise BadInput(REFUSED_IN_DP_MODE.format(name="log"))

    def save(self, model_or_state: Any) -> None:
        raise BadInput(REFUSED_IN_DP_MODE.format(name="save"))

    def fit_private(self, model: Any, loss_fn: Any, *, epochs: int = 1, batch_size: int = 32, lr: float = 0.1,
                    max_grad_norm: float = 1.0, optimiser: str = "sgd") -> None:
        raise _Handed(model, loss_fn, {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                       "max_grad_norm": max_grad_norm, "optimiser": optimiser})


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def check_private_cell(code: str, schema: dict[str, Any], *, fields: list[str] | None = None,
                       params: dict[str, Any] | None = None, epochs: int = 1, first_line: int = 1,
                       artifacts: dict[str, str] | None = None) -> ProgramCheck:
    """Run the DP cell up to ``rapha.fit_private``, export its model and loss on
    ``schema``-shaped synthetic records and check the program as the edge's trainer does."""
    chosen = _select(schema, fields)
    runtime = PreflightRapha(schema=chosen, params=dict(params or {}), epochs=epochs, cohort_size=EXAMPLE_RECORDS,
                             artifacts=dict(artifacts or {}))
    import torch

    # fork_rng: the cell's torch.manual_seed (and the export's draws) leave the kernel's own generator as it was
    with torch.random.fork_rng(devices=[]):
        try:
            exec(compile(code, CELL_FILENAME, "exec"), {"rapha": runtime})  # noqa: S102 - the user's own cell
        except _Handed as handed:
            return _check_handed(handed, chosen)
        except Exception as exc:
            failed = _cell_failed(exc, first_line)
            return ProgramCheck(f"the cell failed before it reached rapha.fit_private: {failed.message}")
    return ProgramCheck("the cell finished without calling rapha.fit_private: the edge's trainer would get no model")


def _check_handed(handed: _Handed, schema: dict[str, Any]) -> ProgramCheck:
    import torch

    try:
        parse_private_request(handed.settings)
    except PrivateRequestError as bad:
        return ProgramCheck(f"rapha.fit_private: {bad}")
    if not isinstance(handed.model, torch.nn.Module) or not callable(handed.loss_fn):
        return ProgramCheck("rapha.fit_private takes a torch.nn.Module and a loss function loss_fn(output, batch)")
    fields = list(schema)
    features = [name for name in fields if schema[name].get("kind") == "feature"]
    if not features:
        return ProgramCheck("the dataset's schema has no feature field to call the model on")
    before = {name: type(module) for name, module in handed.model.named_modules()}
    try:
        model = fix_in_place(handed.model)
    except Exception:  # as at the edge: what could not be fixed is left for the check to name
        model = handed.model
    notes = fixed_layers(before, model)
    try:
        program = export_loss_program(torch, model, handed.loss_fn, schema, fields, features)
        check_private_program(program)
    except PrivateProgramError as refused:
        return ProgramCheck(refused.diagnostics(), tuple(notes))
    except Exception as exc:  # the check itself failed on this program: the edge's, the same code, would too
        return ProgramCheck(f"the exported program could not be checked: {_first_line(exc)}", tuple(notes))
    notes.append(f"the model and loss export ({operator_count(program)} operator calls) and can be trained "
                 "privately by the edge's trainer")
    return ProgramCheck(None, tuple(notes))


def fixed_layers(before: dict[str, type], model: Any) -> list[str]:
    """The layers ``ModuleValidator.fix`` replaced (``before``: each layer's type), named."""
    after = {name: type(module) for name, module in model.named_modules()}
    return [f"layer {name!r} ({kind.__name__}) becomes {after[name].__name__} at export, as at the edge "
            "(opacus ModuleValidator.fix): fresh affine parameters, no running statistics"
            for name, kind in before.items() if name in after and after[name] is not kind]


def export_loss_program(torch: Any, model: Any, loss_fn: Any, schema: dict[str, Any], fields: list[str],
                        features: list[str]) -> Any:
    """``(*fields) -> loss`` exported as the edge's job process exports it; PrivateProgramError
    with what to change when the loss is not a scalar or the program does not export."""

    class LossProgram(torch.nn.Module):  # type: ignore[misc]  # torch is imported lazily
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            batch = dict(zip(fields, tensors, strict=True))
            return loss_fn(self.model(*(batch[name] for name in features)), batch)

    records = synthetic_records(schema, EXAMPLE_RECORDS, seed=0)
    inputs = tuple(records[name] for name in fields)
    wrapper = LossProgram().train()
    try:
        loss = wrapper(*inputs)
    except Exception as exc:  # the researcher's own code on synthetic records: the message is theirs
        raise PrivateProgramError(f"the model and loss fail on {EXAMPLE_RECORDS} schema-shaped records: "
                                  f"{_first_line(exc)}") from None
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.dtype.is_floating_point:
        what = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise PrivateProgramError(f"loss_fn(output, batch) returns {what}, not a floating-point scalar",
                                  hint="reduce the per-sample losses over the batch, e.g. with .mean()")
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(wrapper, inputs, dynamic_shapes=(tuple({0: batch} for _ in inputs),))
    except Exception as exc:
        raise PrivateProgramError(f"the model and loss do not export with torch.export: {_first_line(exc)}",
                                  hint="the edge trains the exported program; make the forward pass traceable "
                                       "(no data-dependent Python branches)") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
