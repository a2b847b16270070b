"""Kubernetes quantity syntax ("500m", "2", "4Gi", "1e3") parsed to exact decimals."""

from __future__ import annotations

import re
from decimal import Decimal

# The API server's own message for a malformed quantity.
QUANTITY_FORMAT_ERROR = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)

# Kubernetes: "no quantity may represent a number greater than 2^63-1 in magnitude". Kubernetes caps
# larger values; here they are refused, and nothing bigger reaches the store (its JSON holds 64-bit ints).
MAX_QUANTITY = 2**63 - 1
QUANTITY_RANGE_ERROR = f"must be a finite number no larger than 2^63-1 ({MAX_QUANTITY})"

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_EXPONENT = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    pass


def parse_quantity(value: str | int | float) -> Decimal:
    """Exact value of a quantity; QuantityError carries the API server's format or range message."""
    try:
        amount = _parse(value)
    except QuantityError:
        raise
    except (ArithmeticError, ValueError):  # an exponent past Decimal's range or int()'s digit limit
        raise QuantityError(QUANTITY_RANGE_ERROR) from None
    if not amount.is_finite() or abs(amount) > MAX_QUANTITY:
        raise QuantityError(QUANTITY_RANGE_ERROR)
    return amount


def _parse(value: str | int | float) -> Decimal:
    if isinstance(value, bool):
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    match = _QUANTITY.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise QuantityError(QUANTITY_FORMAT_ERROR)
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL_EXPONENT:
        return number.scaleb(_DECIMAL_EXPONENT[suffix])
    return number.scaleb(int(suffix[1:]))


def is_integer_quantity(value: str | int | float) -> bool:
    try:
        return parse_quantity(value) == parse_quantity(value).to_integral_value()
    except QuantityError:
        return False
