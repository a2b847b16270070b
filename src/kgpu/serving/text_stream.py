"""Generated tokens to text, piece by piece: incremental detokenization and `stop` strings.

A token can end in the middle of a UTF-8 character (byte-level BPE) and a word-piece decoder may change a
piece once the next one is known, so each new piece is decoded with a few tokens of left context and sent only
once it no longer ends in a partial character. Text that might be the start of a stop string is held back
until it either completes the stop string (then the answer ends before it) or cannot anymore.
"""

from __future__ import annotations

from typing import Any

_PARTIAL = "\ufffd"


class IncrementalDetokenizer:
    """The text of a growing token list, returned as the new part at each step."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # tokens decoded as left context only
        self._read = 0  # tokens whose text was already returned

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, ids: list[int], final: bool = False) -> str:
        self._ids.extend(ids)
        known = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) <= len(known) or (text.endswith(_PARTIAL) and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(known) :]


class StopMatcher:
    """Cuts the text at the first stop string; holds back a tail that may still become one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = tuple(stop for stop in stops if stop)
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of `piece` that is safe to send now (all of it if no stop string is set)."""
        if self.stopped:
            return ""
        if not self._stops:
            return piece
        text = self._pending + piece
        cut = min((index for stop in self._stops if (index := text.find(stop)) >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return text[:cut]
        hold = max(
            (n for stop in self._stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0
        )
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """At the end of the answer: the held-back tail was not a stop string after all."""
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending
