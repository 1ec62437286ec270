"""Is an exported loss program one the trainer can train privately?

The graph check itself (``check_private_program``) lives in the protocol
(``jupyter_rapha/protocol/private_program.py``), so that the notebook's preflight runs the
very check the trainer runs, on the program it exports before anything is sent; here it
raises the trainer's ``PrivacyError``. The privacy guarantee does not rest on it: the
trainer computes every sample's gradient by its own call on a lot of one (dpsgd.py).

``check_per_sample`` is the functional second check: on a real or synthetic lot, the
program's loss must equal the mean (or sum) of its losses on each sample alone.
``fix_model`` is Opacus's ``ModuleValidator.fix`` for the job process's export.
"""

from __future__ import annotations

import torch
from opacus.validators import ModuleValidator
from torch.export import ExportedProgram
from torch.fx import GraphModule

from jupyter_rapha.protocol import private_program
from jupyter_rapha.protocol.private_program import GROUP_NORM_HINT, PrivateProgramError

from .errors import PrivacyError

__all__ = ["GROUP_NORM_HINT", "check_per_sample", "check_private_program", "fix_model"]


def check_private_program(program: ExportedProgram | GraphModule) -> None:
    """Raise PrivacyError naming the layer and the operator if the program cannot be
    trained privately as written (the protocol's check, the trainer's error)."""
    try:
        private_program.check_private_program(program)
    except PrivateProgramError as refused:
        raise PrivacyError(refused.message, hint=refused.hint) from None


def check_per_sample(loss_module: torch.nn.Module, tensors: tuple[torch.Tensor, ...], *,
                     samples: int = 4, tolerance: float = 1e-4) -> None:
    """The functional check: on the first ``samples`` records of a lot, the loss of the lot
    must be the mean (or the sum) of the losses of each record alone; otherwise the
    program mixes samples."""
    size = min(samples, int(tensors[0].shape[0]))
    if size < 2:
        raise PrivacyError("the per-sample check needs a lot of at least two records")
    with torch.no_grad():
        together = float(loss_module(*(t[:size] for t in tensors)))
        alone = [float(loss_module(*(t[i:i + 1] for t in tensors))) for i in range(size)]
    mean, total = sum(alone) / size, sum(alone)
    scale = max(1.0, abs(together))
    if min(abs(together - mean), abs(together - total)) > tolerance * scale:
        raise PrivacyError(f"the loss of {size} records together ({together:.6g}) is neither the mean nor the sum "
                           f"of their losses alone (mean {mean:.6g}): the model or the loss mixes samples",
                           hint="remove batch statistics (BatchNorm: " + GROUP_NORM_HINT + ")")


def fix_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model with what Opacus's ModuleValidator can fix fixed: BatchNorm becomes
    GroupNorm (new affine parameters: fix before training, not after), InstanceNorm stops
    tracking running statistics. Raises PrivacyError for what it cannot fix."""
    fixed: torch.nn.Module = ModuleValidator.fix(model)
    problems = [str(p) for p in ModuleValidator.validate(fixed, strict=False)
                if "BatchNorm" in type(p).__name__ or "batch" in str(p).lower()]
    if problems:
        raise PrivacyError("the model still mixes samples after ModuleValidator.fix: " + "; ".join(problems))
    return fixed
