"""Is an exported loss program one the trainer can train privately?

The privacy guarantee does not rest on this check: the trainer computes every sample's
gradient by its own call on a lot of one (dpsgd.py), so nothing the program does with its
batch can make one sample's gradient depend on another's. What this check catches is a
program that would then train as something other than what the researcher wrote, or not
at all, and it says so before any record is read:

- the output: one scalar tensor (the lot's loss);
- operators: only aten operators (``torch.ops.aten.*``) and ``operator.getitem``; a custom
  operator, a higher-order operator or a Python callable is refused;
- batch norm in training mode (``aten.batch_norm``/``native_batch_norm``/
  ``_native_batch_norm_legit*``/``_batch_norm_with_update*``/``cudnn_batch_norm`` with
  training set), which normalises each sample by the statistics of its batch;
- a value computed over the batch dimension (a reduction or an index that removes the
  batch dimension, e.g. ``x - x.mean(0)``) flowing back into a per-sample value, and a
  scan, sort or softmax along the batch dimension. The batch dimension is dim 0 of every
  input, exported as one dynamic dimension (``torch.export.Dim("batch", min=1)``): the
  check follows that symbol through the shapes the export recorded. The loss's own
  reduction over the batch, which reaches the output without returning to a per-sample
  value, is allowed.

Not detected by the graph check: mixing hidden inside one operator not listed here, or an
operator whose output keeps the batch dimension while combining samples by other means
(e.g. a matrix product with the batch on the reduced side). ``check_per_sample`` is the
functional second check: on a real or synthetic lot, the program's loss must equal the
mean (or sum) of its losses on each sample alone.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
from opacus.validators import ModuleValidator
from torch.export import ExportedProgram
from torch.fx import GraphModule, Node

from .errors import PrivacyError

GROUP_NORM_HINT = ("replace it with GroupNorm (opacus.validators.ModuleValidator.fix(model) does so) "
                   "or put the layer in eval mode")
# Batch norm operators and the position of their ``training`` argument (None: always training).
BATCH_NORM_TRAINING = {
    "aten.batch_norm.default": 5, "aten.native_batch_norm.default": 5,
    "aten._native_batch_norm_legit.default": 5, "aten._native_batch_norm_legit.no_stats": 3,
    "aten._native_batch_norm_legit_functional.default": 5, "aten._batch_norm_impl_index.default": 5,
    "aten.cudnn_batch_norm.default": 5, "aten.miopen_batch_norm.default": 5,
    "aten._batch_norm_with_update.default": None, "aten._batch_norm_with_update_functional.default": None,
}
# Operators that keep the batch dimension but combine the samples along ``dim`` (argument 1).
ALONG_A_DIM = ("aten.cumsum", "aten.cumprod", "aten.cummax", "aten.cummin", "aten.logcumsumexp",
               "aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax", "aten.sort",
               "aten.argsort", "aten.flip", "aten.roll")
# The export's guard call in ``ExportedProgram.module()``: checks the inputs, computes nothing.
GUARD_MODULES = ("_guards_fn",)


def check_private_program(program: ExportedProgram | GraphModule) -> None:
    """Raise PrivacyError naming the layer and the operator if the program cannot be
    trained privately as written."""
    graph_module = program.graph_module if isinstance(program, ExportedProgram) else program
    inputs = _user_inputs(program)
    batch = _batch_symbol(inputs)
    _check_scalar_loss(program)
    batched: set[Node] = set()
    lot_level: set[Node] = set()
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and node.target not in GUARD_MODULES:
            raise PrivacyError(f"the program calls module {node.target!r}: only aten operators can be trained",
                               hint="export the model with torch.export")
        if node.op != "call_function":
            if node in inputs:
                batched.add(node)
            continue
        _check_operator(node)
        _check_batch_norm(node)
        sources = node.all_input_nodes
        if _carries(node, batch):
            if any(s in lot_level for s in sources):
                raise _mixing(node, "uses a value computed over the whole batch")
            if _along_batch(node, batch):
                raise _mixing(node, "combines the samples along the batch dimension")
            batched.add(node)
        elif any(s in batched or s in lot_level for s in sources):
            lot_level.add(node)


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


# --- reading the graph ------------------------------------------------------------------------

def _user_inputs(program: ExportedProgram | GraphModule) -> set[Node]:
    graph = program.graph_module.graph if isinstance(program, ExportedProgram) else program.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if isinstance(program, ExportedProgram):
        names = set(program.graph_signature.user_inputs)
        placeholders = [n for n in placeholders if n.name in names]
    if not placeholders:
        raise PrivacyError("the program takes no input")
    return set(placeholders)


def _check_scalar_loss(program: ExportedProgram | GraphModule) -> None:
    graph = program.graph_module.graph if isinstance(program, ExportedProgram) else program.graph
    output = next(n for n in graph.nodes if n.op == "output")
    found = [n for n in _flatten(output.args) if isinstance(n, Node)]
    if isinstance(program, ExportedProgram):
        names = set(program.graph_signature.user_outputs)
        found = [n for n in found if n.name in names]
    values = [n.meta.get("val") for n in found]
    if len(values) != 1 or not isinstance(values[0], torch.Tensor) or values[0].dim() != 0:
        shapes = [tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in values]
        raise PrivacyError(f"the loss must be one scalar tensor, not {shapes}",
                           hint="reduce the per-sample losses with .mean() over the batch")


def _flatten(value: object) -> list[object]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _batch_symbol(inputs: Iterable[Node]) -> torch.SymInt:
    firsts = []
    for node in inputs:
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise PrivacyError(f"input {node.name!r} has no batch dimension",
                               hint="every field is a tensor with the records on dim 0")
        firsts.append(value.shape[0])
    first = firsts[0]
    if not isinstance(first, torch.SymInt) or any(str(f) != str(first) for f in firsts):
        raise PrivacyError("the program was exported with a fixed batch size",
                           hint='export with dim 0 of every input as one torch.export.Dim("batch", min=1)')
    return first


def _symbols(value: object) -> set[str]:
    if isinstance(value, torch.SymInt):
        return {str(s) for s in value.node.expr.free_symbols}
    return set()


def _carries(node: Node, batch: torch.SymInt) -> bool:
    """Does the node's value have a dimension that depends on the batch size?"""
    wanted = _symbols(batch)
    values = node.meta.get("val")
    for value in values if isinstance(values, (tuple, list)) else (values,):
        if isinstance(value, torch.Tensor) and any(_symbols(d) & wanted for d in value.shape):
            return True
    return False


def _along_batch(node: Node, batch: torch.SymInt) -> bool:
    name = str(node.target)
    if not name.startswith(ALONG_A_DIM) or len(node.args) < 2 or not isinstance(node.args[0], Node):
        return False
    value, dims = node.args[0].meta.get("val"), node.args[1]
    if not isinstance(value, torch.Tensor):
        return False
    rank = value.dim()
    for dim in dims if isinstance(dims, (list, tuple)) else (dims,):
        if isinstance(dim, int) and rank and str(value.shape[dim % rank]) == str(batch):
            return True
    return False


def _layer(node: Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the loss"
    path, kind = list(stack.values())[-1]
    kind_name = str(kind).rpartition(".")[2]
    return f"layer {path!r} ({kind_name})" if path else f"the top module ({kind_name})"


def _check_operator(node: Node) -> None:
    if node.target is operator.getitem:
        return
    if not isinstance(node.target, torch._ops.OpOverload) or node.target.namespace != "aten":
        raise PrivacyError(f"{_layer(node)} calls {node.target!s}, which is not an aten operator",
                           hint="only built-in torch operators can be trained privately")


def _check_batch_norm(node: Node) -> None:
    name = str(node.target)
    if name not in BATCH_NORM_TRAINING:
        return
    position = BATCH_NORM_TRAINING[name]
    training = True if position is None else (len(node.args) > position and bool(node.args[position]))
    if training:
        raise PrivacyError(f"{_layer(node)} is batch norm in training mode ({name}): it normalises each sample "
                           "by its batch's statistics, so samples mix", hint=GROUP_NORM_HINT)


def _mixing(node: Node, what: str) -> PrivacyError:
    return PrivacyError(f"{_layer(node)} {what} ({node.target!s}), so one sample's result depends on the others",
                        hint="compute every per-sample value from that sample alone; reduce over the batch only "
                             "in the final loss")
