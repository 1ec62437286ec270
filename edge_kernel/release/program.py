"""Loading a job's exported program (``torch.export``) without running anything it wrote.

The program file comes out of the sandbox, so it is hostile input, and ``torch.export.load``
is not built for that: it unpickles "opaque" constants (``pickle.loads``), TorchScript
objects and, when a weights-only load fails, any pickle at all; it hands the archive's
shape expressions to ``sympy.sympify`` (``eval``); it resolves each node's target by walking
attributes from the ``torch`` module (``torch.os.system`` is such a walk); it turns
``guards_code`` into Python; and it falls back to a legacy format that unpickles more.
Any of these would run the job's code in the trusted check process, next to the reloaded
records, where it could also write the check's figures.

So the archive is read first as a plain zip and refused (``UnsafeProgram``) unless every
member is one of the kinds ``torch.export.save`` writes for a plain model, no weight or
constant is pickled, every node calls an ATen or prims operator (or one of a few
``operator`` functions on sizes), every shape expression is made of sympy's shape names
and numbers only, every node name is an identifier and the guard code only compares input sizes. Only then
is it loaded, with every ``torch.load`` forced to weights-only, and its graph checked again.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from jupyter_rapha.protocol.errors import RaphaError

MAX_MEMBERS = 100_000
MAX_ARCHIVE_BYTES = 8 * 1024 * 1024 * 1024  # uncompressed: a zip bomb is refused before it is read
MAX_MODEL_JSON_BYTES = 256 * 1024 * 1024

_MEMBER = re.compile(
    r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
    r"models/model\.json|data/weights/weight_\d+|data/weights/model_weights_config\.json|"
    r"data/constants/tensor_\d+|data/constants/model_constants_config\.json|data/sample_inputs/model\.pt)$")
_OPERATORS = frozenset({"_operator.getitem", "_operator.add", "_operator.sub", "_operator.mul",
                        "_operator.floordiv", "_operator.truediv", "_operator.mod", "_operator.neg",
                        "_operator.pow", "_operator.eq", "_operator.ne", "_operator.lt", "_operator.le",
                        "_operator.gt", "_operator.ge", "_operator.and_", "_operator.or_", "_operator.not_"})
_TARGET = re.compile(r"^torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
# The names torch writes into shape expressions (sympy's srepr of sizes and their ranges)
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod", "FloorDiv",
    "CeilDiv", "PythonMod", "CleanDiv", "IntTrueDiv", "FloatTrueDiv", "TruncToInt", "FloorToInt",
    "CeilToInt", "RoundToInt", "ToFloat", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan",
    "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality", "And", "Or", "Not",
    "True", "False", "oo", "positive", "negative", "integer", "real", "nonnegative", "finite"})
_EXPR_TOKEN = re.compile(r"\s+|'[a-z]{1,3}[0-9]+'|[A-Za-z][A-Za-z0-9]*|[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?|[-+*/%(),=<>!]")
_SYMBOL = re.compile(r"^[a-z]{1,3}[0-9]+$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Guard code is Python that torch compiles into a function; only comparisons of input sizes
# with each other or with whole numbers (``L['scan'].size()[0] == L['age'].size()[0]``, what a
# model with several inputs of one batch size gets; ``L['tensors'][0]`` for the items of a
# ``*tensors`` argument, as the DP loss program of ``rapha.fit_private`` takes its fields) are
# let through.
_SIZE = r"L\['[A-Za-z_][A-Za-z0-9_]*'\](\[[0-9]{1,3}\])?\.size\(\)\[[0-9]{1,2}\]"
_GUARD = re.compile(rf"{_SIZE} (==|!=|<=|>=|<|>) ({_SIZE}|-?[0-9]{{1,12}})")


class UnsafeProgram(RaphaError):
    """An exported program the edge will not load; the check reports it as not checkable."""


def load_program(path: Path) -> Any:
    """The ``ExportedProgram`` in ``path``, after the archive passed every check above."""
    check_archive(path)
    with _weights_only_loads():
        import torch

        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # a torch failure on hostile bytes: wrapped once, here
            raise UnsafeProgram("the exported program does not load") from exc
    check_graph(program)
    return program


def check_archive(path: Path) -> None:
    """Every member named as ``torch.export.save`` names them, under one root; nothing
    pickled, called, evaluated or named that a plain export of a plain model would not."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            root = _root(members)
            model = _read(archive, f"{root}/models/model.json", MAX_MODEL_JSON_BYTES)
            weights = _read(archive, f"{root}/data/weights/model_weights_config.json", MAX_MODEL_JSON_BYTES)
            constants = _optional(archive, f"{root}/data/constants/model_constants_config.json")
    except (OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise UnsafeProgram("the exported program is not a readable archive") from exc
    _check_payload_config(weights, "weight_")
    if constants is not None:
        _check_payload_config(constants, "tensor_")
    _check_model(model)


def _root(members: list[zipfile.ZipInfo]) -> str:
    if not members or len(members) > MAX_MEMBERS or sum(m.file_size for m in members) > MAX_ARCHIVE_BYTES:
        raise UnsafeProgram("the exported program's archive is empty or too large")
    roots = {m.filename.split("/", 1)[0] for m in members}
    if len(roots) != 1 or not _IDENTIFIER.fullmatch(next(iter(roots))):
        raise UnsafeProgram("the exported program's archive has more than one root")
    root = roots.pop()
    for member in members:
        inner = member.filename[len(root) + 1:]
        if member.is_dir() or not _MEMBER.fullmatch(inner):
            raise UnsafeProgram("the exported program holds a file that a plain export does not write")
    return root


def _read(archive: zipfile.ZipFile, name: str, limit: int) -> Any:
    if archive.getinfo(name).file_size > limit:
        raise UnsafeProgram("the exported program's description is too large")
    return json.loads(archive.read(name))


def _optional(archive: zipfile.ZipFile, name: str) -> Any:
    return _read(archive, name, MAX_MODEL_JSON_BYTES) if name in archive.namelist() else None


def _check_payload_config(config: Any, prefix: str) -> None:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise UnsafeProgram("the exported program's payload list is malformed")
    for entry in entries.values():
        if not isinstance(entry, dict) or entry.get("use_pickle") is not False \
                or not str(entry.get("path_name", "")).startswith(prefix):
            raise UnsafeProgram("the exported program pickles a weight or constant")


def _check_model(model: Any) -> None:
    if not isinstance(model, dict):
        raise UnsafeProgram("the exported program's description is malformed")
    guards = model.get("guards_code") or []
    if not isinstance(guards, list) or not all(isinstance(g, str) and _GUARD.fullmatch(g) for g in guards):
        raise UnsafeProgram("the exported program carries guard code other than size comparisons")
    graph = (model.get("graph_module") or {}).get("graph") or {}
    if graph.get("custom_obj_values"):
        raise UnsafeProgram("the exported program carries script objects")
    for key, value in _walk(model):
        if key == "target" and not _allowed_target(value):
            raise UnsafeProgram("the exported program calls something other than a tensor operator")
        if key == "expr_str" and not _plain_expression(value):
            raise UnsafeProgram("the exported program carries a shape expression the edge does not read")
        if key == "name" and isinstance(value, str) and not _IDENTIFIER.fullmatch(value):
            raise UnsafeProgram("the exported program names a value with other than an identifier")


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def _allowed_target(target: Any) -> bool:
    return isinstance(target, str) and (bool(_TARGET.fullmatch(target)) or target in _OPERATORS)


def _plain_expression(text: Any) -> bool:
    if not isinstance(text, str) or len(text) > 4096:
        return False
    position = 0
    while position < len(text):
        token = _EXPR_TOKEN.match(text, position)
        if token is None:
            return False
        word = token.group(0)
        if word[0].isalpha() and word not in _SYMPY_NAMES and not _SYMBOL.fullmatch(word):
            return False
        position = token.end()
    return True


def check_graph(program: Any) -> None:
    """After loading, again: every call is an ATen/prims operator or an allowed operator."""
    import operator

    import torch

    allowed = {getattr(operator, name.split(".", 1)[1]) for name in _OPERATORS}
    for node in program.graph.nodes:
        if node.op == "call_function":
            target = node.target
            if isinstance(target, torch._ops.OpOverload) and target.namespace in ("aten", "prims"):
                continue
            if target not in allowed:
                raise UnsafeProgram("the exported program calls something other than a tensor operator")
        elif node.op not in ("placeholder", "output", "get_attr"):
            raise UnsafeProgram("the exported program holds a call the edge does not run")


@contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` inside refuses anything but tensors and plain containers,
    even where torch itself asks for a full unpickling."""
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous

