from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kgpu.api.quantity import QuantityError, is_integer_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("4Gi", Decimal(4 * 2**30)),
        ("1.5Ki", Decimal(1536)),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("1e3", Decimal(1000)),
        ("100n", Decimal("0.0000001")),
        (".5", Decimal("0.5")),
        (3, Decimal(3)),
        (0.25, Decimal("0.25")),
    ],
)
def test_quantities_parse_exactly(text: str | int | float, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "4GB", "2 cores", "1.2.3", "Gi", "1ki", True])
def test_malformed_quantities_are_refused(text: object) -> None:
    with pytest.raises(QuantityError, match="quantities must match the regular expression"):
        parse_quantity(text)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**12))
def test_integers_in_any_form_are_integer_quantities(n: int) -> None:
    assert is_integer_quantity(n)
    assert is_integer_quantity(str(n))
    assert is_integer_quantity(f"{n}000m")


@given(st.integers(min_value=1, max_value=999))
def test_milli_fractions_are_not_integers(milli: int) -> None:
    assert not is_integer_quantity(f"{milli}m")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "1e19", "8Ei", "1e999999999"])
def test_quantities_beyond_kubernetes_range_are_refused(value: object) -> None:
    # Kubernetes: "no quantity may represent a number greater than 2^63-1 in magnitude".
    with pytest.raises(QuantityError, match="no larger than 2"):
        parse_quantity(value)  # type: ignore[arg-type]


def test_the_largest_quantity_kubernetes_allows_parses() -> None:
    assert parse_quantity("9223372036854775807") == Decimal(2**63 - 1)
