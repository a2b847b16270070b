"""Per-request sampling inside transformers' continuous batching: temperature, top-p and a seed per request.

transformers' continuous batching samples for the whole manager at once (`do_sample` is fixed when it starts)
from the process-wide random generator, so requests in one batch cannot differ in greedy-or-not, and a
request's `seed` cannot make its answer reproducible while other requests share the batch. This processor
closes that gap within the library's own extension point (a continuous-batching logits processor with one
int32 argument per row): the manager runs greedy (argmax), and for each row that asks to sample, the
processor draws the token from that request's own `torch.Generator` and leaves only that token finite, so the
argmax picks it. Greedy rows pass untouched, bit for bit what `generate` computes.
"""

from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass

import torch
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)

SLOT_KWARG = "kgpu_sampling_slot"
_GREEDY = -1


@dataclass(frozen=True)
class Sampling:
    temperature: float  # > 0; a temperature of 0 is greedy and has no Sampling
    top_p: float
    seed: int | None


class RequestSampler(ContinuousBatchingLogitsProcessor):
    supported_kwargs: dict[str, type] = {SLOT_KWARG: int}
    ignored_kwargs: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[int, tuple[Sampling, torch.Generator | None]] = {}
        self._next = itertools.count()

    def register(self, sampling: Sampling | None) -> int:
        """A slot id for a request's `logit_processor_kwargs`; `None` (greedy) needs no slot."""
        if sampling is None:
            return _GREEDY
        with self._lock:
            slot = next(self._next)
            self._slots[slot] = (sampling, None)
        return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self._slots.pop(slot, None)

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(_GREEDY)

    def prepare_tensor_args(self, requests_with_new_token: list) -> torch.Tensor:
        slots = [
            request.state.logit_processor_kwargs.get(SLOT_KWARG, _GREEDY)
            for request in requests_with_new_token
        ]
        return torch.tensor(slots, dtype=torch.int32, device="cpu")

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        slots = tensor_arg[: scores.size(0)].tolist()
        for row, slot in enumerate(slots):
            if slot == _GREEDY:
                continue
            token = self._draw(slot, scores[row])
            if token is None:
                continue
            scores[row].fill_(float("-inf"))
            scores[row, token] = 0.0
        return scores

    def _draw(self, slot: int, logits: torch.Tensor) -> int | None:
        with self._lock:
            entry = self._slots.get(slot)
            if entry is None:  # released (the request was cancelled between scheduling and this pass)
                return None
            sampling, generator = entry
            if generator is None:
                generator = torch.Generator(device=logits.device)
                generator.manual_seed(sampling.seed if sampling.seed is not None else random.getrandbits(63))
                self._slots[slot] = (sampling, generator)
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least the most likely token).
            outside = sorted_probs.cumsum(-1) - sorted_probs >= sampling.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator).item())


def install(processors: ContinuousBatchingLogitsProcessorList, sampler: RequestSampler) -> None:
    """Add `sampler` to a manager's processor list before its batch processor is created (start or warmup):
    the list sizes its argument tensor by `tensors_required` then."""
    processors.logits_processor.append(sampler)
    processors.tensors_required += 1
    processors.supported_keys.update(sampler.supported_kwargs)
    processors.do_processing = True
