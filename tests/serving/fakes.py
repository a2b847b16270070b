"""A stand-in engine whose timing the tests control, so batching behaviour is observable and deterministic."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np


class FakeEngine:
    """Embeds a sequence as [length, first id, 0, 0]; records every batch; can block or sleep in embed."""

    name = "fake"
    max_seq_len = 512
    device = "cpu"
    dtype = "float32"
    vocab_size = 1000

    def __init__(self, delay: float = 0.0, dim: int = 4) -> None:
        self.dim = dim
        self.delay = delay
        self.batches: list[list[int]] = []  # lengths of the sequences of each call
        self.entered = threading.Event()  # set when embed starts
        self.release = threading.Event()  # embed waits on it when blocking
        self.release.set()
        self.fail_next = False

    def block(self) -> None:
        self.entered.clear()
        self.release.clear()

    def default_workers(self) -> int:
        return 1

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [[101, *(len(word) for word in text.split()), 102] for text in texts]

    def prepare_ids(self, ids: list[list[int]]) -> list[list[int]]:
        return ids

    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        self.batches.append([len(sequence) for sequence in batch])
        self.entered.set()
        if not self.release.wait(timeout=10):
            raise TimeoutError("test never released the fake engine")
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("device lost")
        time.sleep(self.delay)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        for row, sequence in enumerate(batch):
            out[row, 0] = len(sequence)
            out[row, 1] = sequence[0]
        return out
