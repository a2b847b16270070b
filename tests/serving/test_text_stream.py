"""Incremental detokenization and stop strings, piece by piece."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.serving.text_stream import IncrementalDetokenizer, StopMatcher


@pytest.fixture(scope="module")
def tiny_llm_tokenizer(tiny_llm_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llm_dir, local_files_only=True)


def test_a_stop_string_split_over_pieces_is_held_back_then_cut() -> None:
    matcher = StopMatcher(("END",))
    assert matcher.feed("abcE") == "abc"
    assert matcher.feed("N") == ""
    assert matcher.feed("Dtail") == ""
    assert matcher.stopped and matcher.flush() == ""


def test_a_held_back_tail_that_is_no_stop_string_is_sent() -> None:
    matcher = StopMatcher(("END",))
    assert matcher.feed("abEN") == "ab"
    assert matcher.feed("x") == "ENx"
    assert matcher.feed("E") == ""
    assert matcher.flush() == "E"


@given(st.text(max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_pieces_fed_without_stops_come_back_whole(text: str, cuts: list[int]) -> None:
    matcher = StopMatcher(("zz",))
    points = sorted({0, len(text), *(min(c, len(text)) for c in cuts)})
    out = "".join(matcher.feed(text[a:b]) for a, b in itertools.pairwise(points)) + matcher.flush()
    assert out == (text[: text.find("zz")] if "zz" in text else text)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 511), min_size=1, max_size=30))
def test_detokenized_pieces_concatenate_to_the_decoded_text(tiny_llm_tokenizer, ids: list[int]) -> None:
    detokenizer = IncrementalDetokenizer(tiny_llm_tokenizer)
    pieces = [detokenizer.push([token], final=i == len(ids) - 1) for i, token in enumerate(ids)]
    assert "".join(pieces) == tiny_llm_tokenizer.decode(ids, skip_special_tokens=True)
