"""Shared pieces of the fuzz suite: a fixed budget and the hostile values it draws from.

Every property runs derandomized (the same examples on every run and machine) with a
fixed number of examples and no example database, so ``make test`` stays deterministic
and its time bounded.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def budget(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    print_blob=False)


# Values chosen because each has broken a parser somewhere: non-ASCII digits, lone
# surrogates, numbers past float range or past int-to-str limits, deep nesting.
NASTY_STRINGS = ["", "\u00b2", "\u0663", "\ud800", "\udfff", "9" * 5000, "9223372036854775808", "-1", " 1",
                 "1\n", "\x00", "a" * 10_000, "[" * 200, "\\", '"', "NaN", "Infinity", "1e400", "0x10", "\uffff"]
NASTY_NUMBERS: list[Any] = [0, -1, 2**53 + 1, 2**63, 10**400, 1e308, float("inf"), float("-inf"), float("nan"),
                            True, False, -0.0, 1e-320]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(NASTY_NUMBERS), st.text(max_size=20), st.sampled_from(NASTY_STRINGS))


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


json_values = st.recursive(
    scalars | st.sampled_from([nested(200), {"a": nested(100)}]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

# raw bytes of a JSON-ish body: real JSON, structural junk and broken encodings
json_bytes = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"[" * 100_000, b"{\"a\":" * 50_000, b"\xff\xfe", b"\"\\ud800\"", b"1" * 5000,
                     b"[" * 64 + b"]" * 64, b"{}", b"null", b"[]", b"\xef\xbb\xbf{}", b"\"\\u0000\""]),
    st.builds(lambda v: repr(v).encode("utf-8", "surrogatepass"), json_values),
)


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of a JSON value, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, prefix + (index,))
    return found


def replaced(value: Any, path: tuple, new: Any) -> Any:
    """A deep copy of ``value`` with the node at ``path`` replaced (or removed when ``new``
    is the DELETE marker)."""
    if not path:
        return new
    out = copy.deepcopy(value)
    node = out
    for step in path[:-1]:
        node = node[step]
    if new is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = new
    return out


DELETE = object()


# Every node of a document replaced by each of these, exhaustively: the cases a random
# draw of a few hundred examples can miss are exactly the simple ones (a None, an empty list).
HOSTILE_SAMPLES: list[Any] = [None, [], {}, "", "\u00b2", "\ud800", 10**400, 2**63, -1, float("nan"), True,
                              nested(100), {"": [[]]}, DELETE]


def every_mutation(value: Any):
    """(path, new value, mutated copy) for every non-root node and every hostile sample."""
    for path in paths(value):
        if path:
            for sample in HOSTILE_SAMPLES:
                yield path, sample, replaced(value, path, sample)
