import math

import pytest

from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.errors import BadInput


def test_rfc8785_appendix_example():
    value = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
                '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}')
    assert canonical_json(value) == expected.encode("utf-8")


@pytest.mark.parametrize("value,text", [
    (0.0, "0"), (-0.0, "0"), (1.0, "1"), (100.0, "100"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
    (1e-6, "0.000001"), (1e-7, "1e-7"), (-12.5, "-12.5"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (123456789012345680000.0, "123456789012345680000"),
    (9007199254740991, "9007199254740991"), (-3, "-3"),
])
def test_numbers_follow_ecmascript(value, text):
    assert canonical_json(value) == text.encode()


def test_keys_sort_by_utf16_code_units():
    # U+1F600 is D83D DE00 in UTF-16 and sorts before U+FB01, unlike by code point.
    assert canonical_json({"\ufb01": 1, "\U0001f600": 2, "a": 0}) == '{"a":0,"\U0001f600":2,"\ufb01":1}'.encode()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2**53, {1: "x"}, object(), "\ud800"])
def test_unrepresentable_values_are_refused(bad):
    with pytest.raises(BadInput):
        canonical_json(bad)
