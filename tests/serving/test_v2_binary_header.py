"""The binary extension's Inference-Header-Content-Length: a byte count or a 400, never a 500."""

from __future__ import annotations

import pytest

from kgpu.serving.errors import ApiError
from kgpu.serving.v2_binary import header_length


def test_a_byte_count_within_the_body_is_the_headers_length():
    assert header_length(" 12 ", 20) == 12
    assert header_length(None, 20) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "-1", "1e3", "", "21"])
def test_anything_else_is_a_400_naming_the_header(value):
    # "\u00b2" arrives as a latin-1 header byte; str.isdigit() accepts it and int() does not.
    with pytest.raises(ApiError) as raised:
        header_length(value, 20)
    assert raised.value.status == 400 and "Inference-Header-Content-Length" in str(raised.value)
