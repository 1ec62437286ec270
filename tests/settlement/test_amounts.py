"""Escrow amounts in token units (jupyter_rapha.protocol.escrow): exact or refused."""

from __future__ import annotations

import pytest

from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.escrow import from_units, job_key, max_cost_units, shortfall, to_units


def test_prices_convert_exactly_to_token_units():
    assert to_units("0.01") == 10**16
    assert to_units("3") == 3 * 10**18
    assert to_units("0.010000") == 10**16  # trailing zeros are not places the token lacks
    assert to_units("0.05", decimals=2) == 5
    assert to_units("0", decimals=0) == 0
    assert to_units("0.000000000000000001") == 1


@pytest.mark.parametrize("price,decimals", [("0.001", 2), ("0.0000000000000000001", 18), ("1.5", 0)])
def test_a_price_with_more_decimals_than_the_token_is_refused_saying_how_many(price, decimals):
    with pytest.raises(BadInput) as refused:
        to_units(price, decimals)
    places = len(price.partition(".")[2])
    assert f"has {places} decimal places; the settlement token has {decimals}" in refused.value.diagnostics()


@pytest.mark.parametrize("price", ["-1", "1e3", "NaN", "", "0x10", "1.", ".5"])
def test_a_price_that_is_not_a_plain_decimal_is_refused(price):
    with pytest.raises(BadInput, match="must be a decimal"):
        to_units(price)


def test_units_print_back_as_the_price_and_costs_multiply():
    assert from_units(10**16) == "0.01" and from_units(3 * 10**18) == "3" and from_units(0) == "0"
    assert max_cost_units(10**16, 100) == 10**18
    assert shortfall(10**18, 10**16, 100) == 0
    assert shortfall(10**18 - 7, 10**16, 100) == 7


def test_job_keys_are_32_bytes_distinct_per_job():
    assert len(job_key("a")) == 32 and job_key("a") != job_key("b")
    with pytest.raises(BadInput):
        job_key("")
