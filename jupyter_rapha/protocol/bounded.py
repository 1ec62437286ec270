"""Bounded parsing of untrusted bytes: JSON, whole numbers and the process's recursion limit.

Everything an edge or a verifier reads from someone else goes through here, so that a
hostile input meets the project's own error (``BadInput`` or the caller's kind) and never
a stack overflow, a ``UnicodeEncodeError`` deep inside a handler, or an ``OverflowError``
from SQLite. Limits are data with safe defaults.

Nesting is checked before ``json.loads`` runs, over the text itself: the C parser recurses
once per level and is bounded only by ``sys.getrecursionlimit()``, which some libraries
raise far past what the C stack holds (py_ecc sets 100000), so a body of nested ``[`` would
otherwise crash the process instead of raising.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import BadInput, RaphaError

MAX_JSON_DEPTH = 64
MAX_INT64 = 2**63 - 1  # SQLite's INTEGER range; larger values overflow when bound
_STRING = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
_TO_PARENS = bytes.maketrans(b"[{]}", b"(())")
_ASCII_DIGITS = re.compile(r"[0-9]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def loads(data: bytes | str, *, what: str = "request body", max_bytes: int | None = None,
          max_depth: int = MAX_JSON_DEPTH, error: type[RaphaError] = BadInput) -> Any:
    """Parse untrusted JSON: strict UTF-8, at most ``max_bytes`` and ``max_depth`` levels of
    nesting, and no lone surrogates in any string. Every refusal is ``error(message)``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{what} is larger than {max_bytes} bytes")
    text = _utf8(data, what, error)
    check_depth(text if isinstance(data, str) else data, max_depth, what=what, error=error)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError covers 4300+ digit integers too
        raise error(f"{what} is not JSON") from exc
    if _SURROGATE_ESCAPE.search(text):
        _require_encodable(value, what, error)
    return value


def _utf8(data: bytes | str, what: str, error: type[RaphaError]) -> str:
    if isinstance(data, str):
        _encodable(data, what, error)
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8") from exc


def check_depth(text: str | bytes, max_depth: int = MAX_JSON_DEPTH, *, what: str = "request body",
                error: type[RaphaError] = BadInput) -> None:
    """Refuse JSON text nested deeper than ``max_depth`` without recursing.

    Works on the structure alone: escape pairs go first (so an escaped quote ends no
    string), then every byte but quotes and brackets, then strings (a bracket inside one
    is not structure). Innermost empty pairs are then removed once per allowed level;
    whatever remains is deeper than allowed or unbalanced, and both are refused."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    # Escape pairs read from the left, as a JSON reader does: escaped backslashes, then escaped quotes.
    structure = data.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = _STRING.sub(b"", structure).translate(_TO_PARENS, b'"')
    for _ in range(max_depth):
        if not brackets:
            return
        reduced = brackets.replace(b"()", b"")
        if reduced == brackets:
            raise error(f"{what} is not JSON (unbalanced brackets)")
        brackets = reduced
    if brackets:
        raise error(f"{what} is nested deeper than {max_depth} levels")


def _require_encodable(value: Any, what: str, error: type[RaphaError]) -> None:
    # json.loads turns the escape "\ud800" into a lone surrogate, which no later .encode()
    # survives; a pair of escapes is one valid character and passes.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _encodable(item, what, error)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())


def _encodable(text: str, what: str, error: type[RaphaError]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{what} holds a string that is not valid Unicode (a lone surrogate)") from exc


def whole_number(text: str, what: str, *, max_value: int = MAX_INT64,
                 error: type[RaphaError] = BadInput) -> int:
    """A non-negative integer written in ASCII digits only, at most ``max_value``.

    ``str.isdigit`` accepts superscripts and other scripts' digits that ``int`` refuses
    or reads differently, and ``int`` refuses 4300+ digits with a ValueError."""
    if not isinstance(text, str) or len(text) > len(str(max_value)) or not _ASCII_DIGITS.fullmatch(text):
        raise error(f"{what} must be a whole number of at most {len(str(max_value))} ASCII digits")
    value = int(text)
    if value > max_value:
        raise error(f"{what} must be at most {max_value}")
    return value


@contextmanager
def recursion_limit_kept() -> Iterator[None]:
    """Undo a library's change to the recursion limit made inside the block.

    py_ecc and py-evm raise it on import (to 100000 and 12288) so that their own deep
    recursion fits; C code bounded by that limit (json, re, pickle) then overflows the C
    stack and kills the process on hostile input rather than raising RecursionError."""
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)
