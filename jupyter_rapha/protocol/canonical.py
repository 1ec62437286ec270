"""RFC 8785 JSON Canonicalization Scheme (JCS).

Signatures and digests are taken over these bytes, so two encoders that disagree on a
single byte would make honest receipts fail. Anything JCS cannot represent exactly
(NaN, infinities, integers beyond 2**53, lone surrogates, non-string keys) is refused
rather than approximated.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import BadInput

_MAX_SAFE_INT = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 encoding of ``value`` as UTF-8 bytes."""
    parts: list[str] = []
    _encode(value, parts)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadInput("string holds a lone surrogate; JCS needs valid Unicode") from exc


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(_integer(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, dict):
        _object(value, out)
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise BadInput(f"cannot canonicalize a value of type {type(value).__name__}")


def _object(value: dict[Any, Any], out: list[str]) -> None:
    for key in value:
        if not isinstance(key, str):
            raise BadInput(f"JSON object keys must be strings, not {type(key).__name__}")
    # JCS orders keys by their UTF-16 code units, not by code points.
    keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
    out.append("{")
    for index, key in enumerate(keys):
        if index:
            out.append(",")
        out.append(_string(key))
        out.append(":")
        _encode(value[key], out)
    out.append("}")


def _string(value: str) -> str:
    # json.dumps with ensure_ascii=False escapes exactly what ECMAScript's
    # JSON.stringify escapes: quote, backslash and C0 controls (\b \f \n \r \t short forms).
    return json.dumps(value, ensure_ascii=False)


def _integer(value: int) -> str:
    if abs(value) > _MAX_SAFE_INT:
        raise BadInput("an integer is beyond 2**53 and cannot be encoded exactly; send it as a string")
    return str(value)


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise BadInput("NaN and infinities have no JSON form; send finite numbers")
    if value == 0:
        return "0"
    return _es6_number(value)


def _es6_number(value: float) -> str:
    """ECMAScript Number.prototype.toString for a finite, non-zero double."""
    sign = "-" if value < 0 else ""
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    exponent = int(exp_text) if exp_text else 0
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    # Position of the decimal point relative to the start of ``digits``.
    point = len(whole.lstrip("0")) + exponent if whole.strip("0") else exponent - (len(frac) - len(frac.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * (-point) + digits
    else:
        exp = point - 1
        head = digits[0] + ("." + digits[1:] if k > 1 else "")
        text = f"{head}e{'+' if exp >= 0 else '-'}{abs(exp)}"
    return sign + text
