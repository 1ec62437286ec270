"""Can an exported loss program be trained privately as written? Both sides run this one
check: the notebook's preflight on the program it exports locally, before anything is
sent, and the edge's trainer on the program the job handed over, before any record is read.

Pure: it reads the graph ``torch.export`` recorded and imports no torch (the protocol is
imported by the edge process, where torch must not load before the policy engine), so the
torch types it meets (``ExportedProgram``, ``torch.fx.Node``, ``OpOverload``, ``SymInt``,
tensors) are recognised by their module and class names and their attributes.

The privacy guarantee does not rest on this check: the trainer computes every sample's
gradient by its own call on a lot of one, so nothing the program does with its batch can
make one sample's gradient depend on another's. What it catches is a program that would
then train as something other than what the researcher wrote, or not at all:

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
(e.g. a matrix product with the batch on the reduced side). The edge's
``check_per_sample`` is the functional second check.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from .errors import BadInput

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
# The loss program holds the researcher's model under this name (both sides' exports).
MODEL_ATTRIBUTE = "model"
# The export's guard call in ``ExportedProgram.module()``: checks the inputs, computes nothing.
GUARD_MODULES = ("_guards_fn",)


class PrivateProgramError(BadInput):
    """The exported program cannot be trained privately as written; the message names the
    layer and the operator, the hint what to change."""


def check_private_program(program: Any) -> None:
    """Raise PrivateProgramError naming the layer and the operator if ``program`` (an
    ``ExportedProgram`` or its ``GraphModule``) cannot be trained privately as written."""
    graph_module = program.graph_module if _is_exported(program) else program
    inputs = _user_inputs(program)
    batch = _batch_symbol(inputs)
    _check_scalar_loss(program)
    batched: set[Any] = set()
    lot_level: set[Any] = set()
    for node in graph_module.graph.nodes:
        if node.op == "call_module" and node.target not in GUARD_MODULES:
            raise PrivateProgramError(f"the program calls module {node.target!r}: only aten operators can be "
                                      "trained", hint="export the model with torch.export")
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


def operator_count(program: Any) -> int:
    """How many operator calls the program's graph makes (for a preflight's one line)."""
    graph_module = program.graph_module if _is_exported(program) else program
    return sum(1 for node in graph_module.graph.nodes if node.op == "call_function")


# --- torch's types, by name ----------------------------------------------------------------------

def _is(value: object, module: str, name: str) -> bool:
    return any(k.__module__ == module and k.__name__ == name for k in type(value).__mro__)


def _is_exported(program: object) -> bool:
    return _is(program, "torch.export.exported_program", "ExportedProgram")


def _is_node(value: object) -> bool:
    return _is(value, "torch.fx.node", "Node")


def _is_tensor(value: object) -> bool:
    return _is(value, "torch", "Tensor")  # fake tensors from the export are Tensor subclasses


def _is_symint(value: object) -> bool:
    return _is(value, "torch", "SymInt")


# --- reading the graph ------------------------------------------------------------------------

def _user_inputs(program: Any) -> set[Any]:
    graph = program.graph_module.graph if _is_exported(program) else program.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if _is_exported(program):
        names = set(program.graph_signature.user_inputs)
        placeholders = [n for n in placeholders if n.name in names]
    if not placeholders:
        raise PrivateProgramError("the program takes no input")
    return set(placeholders)


def _check_scalar_loss(program: Any) -> None:
    graph = program.graph_module.graph if _is_exported(program) else program.graph
    output = next(n for n in graph.nodes if n.op == "output")
    found: list[Any] = [n for n in _flatten(output.args) if _is_node(n)]
    if _is_exported(program):
        names = set(program.graph_signature.user_outputs)
        found = [n for n in found if n.name in names]
    values = [n.meta.get("val") for n in found]
    if len(values) != 1 or not _is_tensor(values[0]) or values[0].dim() != 0:
        shapes = [tuple(v.shape) if _is_tensor(v) else type(v).__name__ for v in values]
        raise PrivateProgramError(f"the loss must be one scalar tensor, not {shapes}",
                                  hint="reduce the per-sample losses with .mean() over the batch")


def _flatten(value: object) -> list[object]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _batch_symbol(inputs: Iterable[Any]) -> Any:
    firsts = []
    for node in inputs:
        value = node.meta.get("val")
        if not _is_tensor(value) or value.dim() == 0:
            raise PrivateProgramError(f"input {node.name!r} has no batch dimension",
                                      hint="every field is a tensor with the records on dim 0")
        firsts.append(value.shape[0])
    first = firsts[0]
    if not _is_symint(first) or any(str(f) != str(first) for f in firsts):
        raise PrivateProgramError("the program was exported with a fixed batch size",
                                  hint='export with dim 0 of every input as one torch.export.Dim("batch", min=1)')
    return first


def _symbols(value: object) -> set[str]:
    if _is_symint(value):
        return {str(s) for s in value.node.expr.free_symbols}  # type: ignore[attr-defined]
    return set()


def _carries(node: Any, batch: Any) -> bool:
    """Does the node's value have a dimension that depends on the batch size?"""
    wanted = _symbols(batch)
    values = node.meta.get("val")
    for value in values if isinstance(values, (tuple, list)) else (values,):
        if _is_tensor(value) and any(_symbols(d) & wanted for d in value.shape):
            return True
    return False


def _along_batch(node: Any, batch: Any) -> bool:
    name = str(node.target)
    if not name.startswith(ALONG_A_DIM) or len(node.args) < 2 or not _is_node(node.args[0]):
        return False
    value, dims = node.args[0].meta.get("val"), node.args[1]
    if not _is_tensor(value):
        return False
    rank = value.dim()
    for dim in dims if isinstance(dims, (list, tuple)) else (dims,):
        if isinstance(dim, int) and rank and str(value.shape[dim % rank]) == str(batch):
            return True
    return False


def _layer(node: Any) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return "the loss"
    path, kind = list(stack.values())[-1]
    kind_name = str(kind).rpartition(".")[2]
    if path == MODEL_ATTRIBUTE:
        return f"the model ({kind_name})"
    path = str(path).removeprefix(MODEL_ATTRIBUTE + ".")  # the layer as the researcher's model names it
    return f"layer {path!r} ({kind_name})" if path else f"the top module ({kind_name})"


def _check_operator(node: Any) -> None:
    if node.target is operator.getitem:
        return
    if not _is(node.target, "torch._ops", "OpOverload") or getattr(node.target, "namespace", None) != "aten":
        raise PrivateProgramError(f"{_layer(node)} calls {node.target!s}, which is not an aten operator",
                                  hint="only built-in torch operators can be trained privately")


def _check_batch_norm(node: Any) -> None:
    name = str(node.target)
    if name not in BATCH_NORM_TRAINING:
        return
    position = BATCH_NORM_TRAINING[name]
    training = True if position is None else (len(node.args) > position and bool(node.args[position]))
    if training:
        raise PrivateProgramError(f"{_layer(node)} is batch norm in training mode ({name}): it normalises each "
                                  "sample by its batch's statistics, so samples mix", hint=GROUP_NORM_HINT)


def _mixing(node: Any, what: str) -> PrivateProgramError:
    return PrivateProgramError(f"{_layer(node)} {what} ({node.target!s}), so one sample's result depends on the "
                               "others", hint="compute every per-sample value from that sample alone; reduce over "
                               "the batch only in the final loss")
