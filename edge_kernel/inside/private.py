"""``rapha.fit_private`` inside the job process: the model and the loss, exported.

In DP mode the job process never receives a record (the broker refuses ``rapha.loader``).
The cell hands its model and ``loss_fn(output, batch)`` over; this exports both as one
program, ``(*fields) -> loss``, with ``torch.export`` on zero tensors shaped as
``rapha.schema`` (every field, in schema order), and the model alone as ``rapha.save``
does, for the membership check. The edge's trainer, a process of its own that imports no
researcher code, loads the programs with the safe loader, validates them and trains them
with DP-SGD; only its parameters leave.

Nothing here is relied on: the cell can replace any of it, and what it writes is read as
hostile by the edge. A program the cell forged still meets the safe loader, the trainer's
validation and the trainer's own noise, clipping and accounting.
"""

from __future__ import annotations

import io
import json
import sys
import traceback
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from jupyter_rapha.protocol.private import PrivateRequestError, parse_private_request

from ..wire.messages import (FIT_PRIVATE_TWICE, LOADER_IN_DP_MODE, LOSS_NOT_SCALAR, MODEL_NOT_EXPORTABLE,
                             NOT_A_MODULE, OUTPUTS_IN_DP_MODE)
from ..wire.outputs import PRIVATE_PROGRAM_FILE, PRIVATE_REQUEST_FILE, PROGRAM_FILE
from .runtime import EXAMPLE_BATCH, BrokerRefused, Rapha, export_model


class LossProgram(torch.nn.Module):
    """``forward(*fields) -> loss``: the batch rebuilt as the dict the loss takes, the model
    called on its feature fields in schema order (as ``model(batch["image"])``)."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[..., Any], fields: list[str],
                 features: list[str]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.fields, self.features = list(fields), list(features)

    def forward(self, *tensors: torch.Tensor) -> Any:
        batch = dict(zip(self.fields, tensors, strict=True))
        return self.loss_fn(self.model(*(batch[name] for name in self.features)), batch)


class PrivateRapha(Rapha):
    """The ``rapha`` object of a DP job: ``fit_private`` instead of the loader, the log and
    save. A convenience only: the broker refuses every loader of a DP job, and the edge
    releases nothing this process writes but what its own trainer makes of the programs."""

    private_fitted = False

    def loader(self, *args: Any, **kwargs: Any) -> Any:
        raise BrokerRefused(LOADER_IN_DP_MODE)

    def log(self, **metrics: Any) -> None:
        raise RuntimeError(OUTPUTS_IN_DP_MODE)

    def save(self, model_or_state_dict: Any) -> None:
        raise RuntimeError(OUTPUTS_IN_DP_MODE)

    def fit_private(self, model: Any, loss_fn: Any, *, epochs: int = 1, batch_size: int = 32, lr: float = 0.1,
                    max_grad_norm: float = 1.0, optimiser: str = "sgd", **unknown: Any) -> None:
        """Hand the model and ``loss_fn(output, batch) -> scalar`` to the edge's DP-SGD
        trainer: exported here on inputs shaped as ``rapha.schema``, trained at the edge on
        Poisson-sampled lots, clipped to ``max_grad_norm`` and noised to the policy's
        epsilon and delta. The released weights are the trainer's."""
        if unknown:
            raise TypeError(NOT_A_MODULE)
        fit_private(self, model, loss_fn, epochs=epochs, batch_size=batch_size, lr=lr,
                    max_grad_norm=max_grad_norm, optimiser=optimiser)


def fit_private(rapha: PrivateRapha, model: Any, loss_fn: Any, *, epochs: int, batch_size: int, lr: float,
                max_grad_norm: float, optimiser: str = "sgd") -> None:
    """Write the programs and the hyperparameters to ``out/`` for the edge's trainer."""
    if rapha.private_fitted:
        raise RuntimeError(FIT_PRIVATE_TWICE)
    if not isinstance(model, torch.nn.Module) or not callable(loss_fn):
        raise TypeError(NOT_A_MODULE)
    try:
        request = parse_private_request({"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                         "max_grad_norm": max_grad_norm, "optimiser": optimiser})
    except PrivateRequestError as bad:
        raise ValueError(str(bad)) from None
    model = fixed(model)
    wrapper = LossProgram(model, loss_fn, *field_order(rapha.schema))
    loss_program = export_loss(wrapper, rapha.schema)
    out = Path(rapha.out_dir)
    out.mkdir(exist_ok=True)
    _save(loss_program, out / PRIVATE_PROGRAM_FILE)
    try:
        model_program = export_model(model, rapha.schema)  # for the membership check
    except Exception:
        traceback.print_exc(file=sys.stderr)
        raise ValueError(MODEL_NOT_EXPORTABLE) from None
    _save(model_program, out / PROGRAM_FILE)
    (out / PRIVATE_REQUEST_FILE).write_text(json.dumps(request), "utf-8")
    rapha.private_fitted = True


def fixed(model: torch.nn.Module) -> torch.nn.Module:
    """Opacus's ``ModuleValidator.fix`` where it is safe (BatchNorm becomes GroupNorm);
    the trainer validates the exported program again, whatever happens here. Its copy of
    the model pickles it, which a class defined in the cell does not survive (it is not
    importable by name): then the same fixers are applied to the model in place."""
    from ..privacy.validate import fix_model

    try:
        result: torch.nn.Module = fix_model(model)
    except Exception:  # the trainer refuses what could not be fixed, naming the layer
        traceback.print_exc(file=sys.stderr)
        return _fixed_in_place(model)
    return result


def _fixed_in_place(model: torch.nn.Module) -> torch.nn.Module:
    from opacus.utils.module_utils import get_submodule, trainable_modules
    from opacus.validators import ModuleValidator

    try:
        for name in [name for name, _ in trainable_modules(model)]:
            sub_module = get_submodule(model, name)
            fixer = ModuleValidator.FIXERS.get(type(sub_module))
            if fixer is not None:
                replacement = fixer(sub_module).to(next(sub_module.parameters()).device)
                model = ModuleValidator._replace_sub_module(root=model, sub_module_name=name,
                                                            new_sub_module=replacement)
    except Exception:  # the trainer refuses what is left, naming the layer
        traceback.print_exc(file=sys.stderr)
    return model


def field_order(schema: dict[str, Any]) -> tuple[list[str], list[str]]:
    fields = [name for name, spec in schema.items() if isinstance(spec, dict)]
    features = [name for name in fields if schema[name].get("kind") == "feature"]
    if not features:
        raise ValueError(MODEL_NOT_EXPORTABLE)
    return fields, features


def example_batch(schema: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    """One zero tensor per field, features and labels, batch dimension in front."""
    return tuple(torch.zeros((EXAMPLE_BATCH, *spec["shape"]), dtype=getattr(torch, spec["dtype"]))
                 for spec in schema.values() if isinstance(spec, dict))


def export_loss(wrapper: LossProgram, schema: dict[str, Any]) -> Any:
    """The loss program, in training mode (as the trainer runs it), batch size left free;
    refused with a fixed text when the loss is not a scalar or the model does not export."""
    inputs = example_batch(schema)
    wrapper.train()
    try:
        loss = wrapper(*inputs)
    except Exception:
        traceback.print_exc(file=sys.stderr)  # stderr stays at the edge
        raise ValueError(MODEL_NOT_EXPORTABLE) from None
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.dtype.is_floating_point:
        raise ValueError(LOSS_NOT_SCALAR)
    try:
        batch = torch.export.Dim("batch", min=1)  # one symbol for every field: the trainer's lots vary in size
        # forward(*tensors): the varargs are one argument, their shapes one tuple
        return torch.export.export(wrapper, inputs, dynamic_shapes=(tuple({0: batch} for _ in inputs),))
    except Exception:
        traceback.print_exc(file=sys.stderr)
        raise ValueError(MODEL_NOT_EXPORTABLE) from None


def _save(program: Any, path: Path) -> None:
    buffer = io.BytesIO()  # into memory first: torch's archive writer aborts on a failed write
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getbuffer())

