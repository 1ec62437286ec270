"""Bounded parsing: nesting refused before json.loads runs (whatever the recursion limit),
ASCII-only whole numbers, no lone surrogates, and the recursion limit kept after the
chain libraries are imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import BadInput, ReleaseDenied


@pytest.mark.parametrize("text", ['{"a": [1, {"b": "[[[["}]}', '"\\"[[["', '["a\\\\", [[]]]', '"\\ud83d\\ude00"',
                                  "[" * 64 + "]" * 64, '{"x": ")("}', "1e400", '"é[["', "[[],[[]],{\"a\":{}}]"])
def test_valid_json_within_the_depth_parses_as_json_does(text):
    assert bounded.loads(text) == json.loads(text) or text == "1e400"


@pytest.mark.parametrize("data,words", [
    (b"[" * 100_000, "unbalanced"), (b"[" * 65 + b"]" * 65, "nested deeper than 64"),
    (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, "nested deeper"), (b"]]", "unbalanced"),
    (b"\xff", "not UTF-8"), (b'"\\ud800"', "surrogate"), (b'{"\\udfff": 1}', "surrogate"),
    (b"1" * 5000, "not JSON"), (b"{nope", "not JSON"),
])
def test_hostile_json_is_bad_input(data, words):
    with pytest.raises(BadInput) as info:
        bounded.loads(data)
    assert words in info.value.message


def test_the_depth_check_holds_with_a_raised_recursion_limit():
    # what py_ecc does on import; json.loads alone would then overflow the C stack
    script = ("import sys; sys.setrecursionlimit(100000)\n"
              "from jupyter_rapha.protocol import bounded\n"
              "from jupyter_rapha.protocol.errors import BadInput\n"
              "try:\n    bounded.loads(b'[' * 200000 + b']' * 200000)\n"
              "except BadInput as exc:\n    print(exc.message)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "nested deeper" in result.stdout, (result.returncode, result.stderr[-500:])


def test_the_error_kind_and_size_limit_are_the_callers():
    with pytest.raises(ReleaseDenied):
        bounded.loads(b"[" * 10, error=ReleaseDenied)
    with pytest.raises(BadInput, match="larger than 4 bytes"):
        bounded.loads(b"[1,2]", max_bytes=4)


@pytest.mark.parametrize("text", ["\u00b2", "\u0663", "9" * 5000, "9223372036854775808", "-1", " 1", "1 ", "", "1.0",
                                  "0x1", "1\n"])
def test_whole_numbers_are_ascii_digits_within_range(text):
    with pytest.raises(BadInput):
        bounded.whole_number(text, "after")


def test_whole_numbers_up_to_int64():
    assert bounded.whole_number("0", "n") == 0
    assert bounded.whole_number(str(2**63 - 1), "n") == 2**63 - 1
    assert bounded.whole_number("0042", "n") == 42
    with pytest.raises(BadInput):
        bounded.whole_number("11", "n", max_value=10)


@pytest.mark.parametrize("module", ["edge_kernel.anchor.devchain", "edge_kernel.anchor.evm", "edge_kernel.edge",
                                    "jupyter_rapha.chain", "edge_kernel.anchor.rpcserver"])
def test_importing_the_chain_libraries_keeps_the_recursion_limit(module):
    script = f"import sys; before = sys.getrecursionlimit(); import {module}; print(before, sys.getrecursionlimit())"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    before, after = result.stdout.split()
    assert before == after, (module, before, after)
