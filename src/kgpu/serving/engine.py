"""The embedding engine: tokenizer plus a transformers encoder, pooled and normalized like sentence-transformers.

``embed`` may run in several threads at once (the batcher's engine workers): inference reads the weights
and keeps no state between calls. Tokenization is thread-safe too, and the Rust tokenizer releases the GIL.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from kgpu.serving.cpus import cpu_threads
from kgpu.serving.devices import resolve_device, resolve_dtype
from kgpu.serving.engine_threads import may_fan_out
from kgpu.serving.model_layout import ModelLayout, read_model_layout
from kgpu.serving.unpadded import unpadded_bert

log = logging.getLogger(__name__)

# Most tokens given to the model in one forward pass: sequences x longest when padded, the real tokens
# when the model runs unpadded. The batcher already bounds a batch by its token budget; this second cut
# keeps long and short inputs of one big request out of the same padded tensor, and on CPUs keeps each
# pass's activations in cache (bigger passes are slower per token there). GPUs gain up to tens of
# thousands of tokens.
_FORWARD_TOKENS = {"cpu": 1024, "cuda": 65536}


class InvalidInputError(ValueError):
    """Token ids given by a client are not valid for this model."""


class EmbeddingEngine:
    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        dtype: str = "auto",
        max_forward_tokens: int | None = None,
        unpadded: bool | None = None,
    ) -> None:
        self._layout: ModelLayout = read_model_layout(Path(model_dir))
        self._model_dir = Path(model_dir)
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype, self._device)
        self._cpu_threads = cpu_threads()
        self._calls = 0  # embed calls running now, in any thread
        self._calls_lock = threading.Lock()
        if self._device.type == "cpu":
            torch.set_num_threads(self._cpu_threads)
        self._max_forward_tokens = max_forward_tokens or _FORWARD_TOKENS.get(self._device.type, 16384)

        self._tokenizer = _load_tokenizer(self._layout)
        self._pad_id = _pad_id(self._tokenizer, self._layout)
        self._model = _load_model(self._layout, self._device, self._dtype)
        # Padding is a fifth to a third of the work of a CPU batch of mixed sentences, so by default BERT
        # models run on their real tokens there. The GPU keeps the padded forward until the unpadded one
        # is measured there (bench/unpadded.py); True asks for it on any device, False never.
        if unpadded is None:
            unpadded = self._device.type == "cpu"
        self._unpadded = unpadded_bert(self._model) if unpadded else None
        self._vocab_size = self._layout.vocab_size or self._tokenizer.get_vocab_size(with_added_tokens=True)
        self._model_takes_ready_mask = _takes_ready_mask(
            self._model, (self._pad_id + 1) % self._vocab_size, self._device
        )
        self._dim = self._layout.hidden_size * len(self._layout.pooling_modes)
        self._warmed = False

    # -- facts about the model -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        # Packages ship their model in a folder literally called "model"; the package name says more.
        directory = self._model_dir.resolve()
        return directory.parent.name if directory.name == "model" else directory.name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def max_seq_len(self) -> int:
        return self._layout.max_seq_len

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def dtype(self) -> str:
        return str(self._dtype).removeprefix("torch.")

    def default_workers(self) -> int:
        """How many batches are worth computing at once (the batcher's engine workers).

        On CPU, batches side by side on their own cores beat one batch over every core: a small model's
        many small operations leave cores waiting on each other (2 cores: 1.4-2x, bench/README.md). Calls
        running at once share the threads (``_share_cpu``), and a call alone still gets every thread.
        Four at most, so each batch keeps a share of a big machine. GPUs compute one batch at a time.
        """
        return min(4, self._cpu_threads) if self._device.type == "cpu" else 1

    @property
    def unpadded(self) -> bool:
        """Whether mixed-length batches skip the padding (PyTorch's encoder fast path)."""
        return self._unpadded is not None

    # -- input preparation -----------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids with the model's special tokens, truncated to max_seq_len (as sentence-transformers)."""
        if not texts:
            return []
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=True)]

    def prepare_ids(self, ids: list[list[int]]) -> list[list[int]]:
        """Check client-given token ids (used as given: no special tokens added) and truncate them."""
        prepared: list[list[int]] = []
        for row, sequence in enumerate(ids):
            if not isinstance(sequence, list) or not sequence:
                raise InvalidInputError(
                    f"input[{row}]: a token sequence must be a non-empty list of integers"
                )
            for column, token in enumerate(sequence):
                if isinstance(token, bool) or not isinstance(token, int):
                    raise InvalidInputError(
                        f"input[{row}][{column}]: token ids must be integers, got {token!r}"
                    )
                if not 0 <= token < self._vocab_size:
                    raise InvalidInputError(
                        f"input[{row}][{column}]: token id {token} is outside this model's vocabulary "
                        f"[0, {self._vocab_size})"
                    )
            prepared.append(sequence[: self.max_seq_len])
        return prepared

    # -- compute ---------------------------------------------------------------------------------------
    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeddings (n, dim) float32 for token-id sequences, in the order given."""
        out = np.empty((len(batch), self._dim), dtype=np.float32)
        if not batch:
            return out
        # Longest first, so each forward pass pads only to its own longest and similar lengths share one.
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]), reverse=True)
        with self._share_cpu(), torch.inference_mode():
            # Results stay on the device until every chunk is queued: the host pads chunk k+1 while the GPU
            # still runs chunk k, and there is one device-to-host copy (one sync) per call.
            chunks = self._forward_chunks(order, batch)
            pooled = [self._forward([batch[i] for i in chunk]) for chunk in chunks]
            out[np.concatenate(chunks)] = torch.cat(pooled).cpu().numpy()
        return out

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.embed(self.tokenize(texts))

    def warmup(self) -> float:
        """Run representative shapes once so the first real request does not pay allocation/kernel setup.

        Idempotent: an engine shared by several apps (tests, benchmarks) is warmed only the first time.
        """
        if self._warmed:
            return 0.0
        started = time.perf_counter()
        token = (self._pad_id + 1) % self._vocab_size
        for length, count in ((8, 1), (32, 16), (self.max_seq_len, 4)):
            self.embed([[token] * length] * count)
        # Mixed lengths take the masked (or, on CPU, unpadded) path, which uniform batches never do.
        self.embed([[token] * length for length in (32, 24, 16, 8)])
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        self._warmed = True
        return time.perf_counter() - started

    @contextlib.contextmanager
    def _share_cpu(self) -> Iterator[None]:
        """On CPU, calls running at once split the threads: a call alone gets all of them (the lowest
        latency for one request), two calls half each (more throughput together, see default_workers).
        A secondary engine thread always uses one (kgpu.serving.engine_threads says why).
        Torch's thread count belongs to the calling thread, so each call sets its own as it starts."""
        if self._device.type != "cpu":
            yield
            return
        with self._calls_lock:
            self._calls += 1
            calls = self._calls
        torch.set_num_threads(max(1, self._cpu_threads // calls) if may_fan_out() else 1)
        try:
            yield
        finally:
            with self._calls_lock:
                self._calls -= 1

    def _forward_chunks(self, order: list[int], batch: Sequence[Sequence[int]]) -> list[list[int]]:
        """Consecutive runs of ``order`` (longest first) whose forward pass stays within the token budget.

        A padded pass computes sequences x its longest (its first) tokens; an unpadded one the real tokens.
        """
        chunks: list[list[int]] = []
        current: list[int] = []
        real = 0  # real tokens of the current chunk
        for index in order:
            length = len(batch[index])
            if current:
                longest = len(batch[current[0]])
                tokens = real + length if self._unpadded is not None else (len(current) + 1) * longest
                if tokens > self._max_forward_tokens:
                    chunks.append(current)
                    current, real = [], 0
            current.append(index)
            real += length
        if current:
            chunks.append(current)
        return chunks

    def _forward(self, sequences: list[Sequence[int]]) -> torch.Tensor:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        padded = np.full((len(sequences), int(lengths.max())), self._pad_id, dtype=np.int64)
        for row, sequence in enumerate(sequences):
            padded[row, : len(sequence)] = sequence
        input_ids = torch.from_numpy(padded).to(self._device)
        lengths_t = torch.from_numpy(lengths).to(self._device)
        real = torch.arange(padded.shape[1], device=self._device)[None, :] < lengths_t[:, None]

        # Without padding the mask is all ones; leaving it out lets SDPA pick its fused no-mask kernels.
        if lengths.min() == lengths.max():
            hidden = self._model(input_ids=input_ids, attention_mask=None).last_hidden_state
        elif self._unpadded is not None:
            hidden = self._unpadded(input_ids, real.long())
        else:
            mask = _ready_mask(real) if self._model_takes_ready_mask else real.long()
            hidden = self._model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        pooled = _pool(hidden, real, lengths_t, self._layout.pooling_modes)
        if self._layout.normalize:
            pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled


def _pool(
    hidden: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, modes: tuple[str, ...]
) -> torch.Tensor:
    """sentence-transformers pooling over right-padded sequences, accumulated in float32 (mask: True or 1 on real tokens)."""
    hidden = hidden.float()
    mask_f = mask.unsqueeze(-1).to(hidden.dtype)
    vectors = []
    for mode in modes:
        if mode == "cls":
            vectors.append(hidden[:, 0])
        elif mode == "max":
            vectors.append(hidden.masked_fill(mask_f == 0, float("-inf")).max(dim=1).values)
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = (hidden * mask_f).sum(dim=1)
            count = mask_f.sum(dim=1).clamp(min=1e-9)
            vectors.append(summed / (count if mode == "mean" else count.sqrt()))
        elif mode == "lasttoken":
            vectors.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1])
    return torch.cat(vectors, dim=-1)


def _load_tokenizer(layout: ModelLayout) -> Tokenizer:
    if layout.tokenizer_file is not None:
        tokenizer = Tokenizer.from_file(str(layout.tokenizer_file))
    else:
        # No tokenizer.json: let transformers convert the vocab files once, then keep the fast backend only.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            layout.transformer_dir, use_fast=True, local_files_only=True
        ).backend_tokenizer
    # tokenizer.json files often carry a fixed padding/truncation from training; batching pads per batch.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=layout.max_seq_len)
    return tokenizer


def _pad_id(tokenizer: Tokenizer, layout: ModelLayout) -> int:
    configured = layout.config.get("pad_token_id")
    if isinstance(configured, int):
        return configured
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0  # padded positions are masked out, so any valid id works


def _load_model(layout: ModelLayout, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModel

    log.debug("loading weights from %s (%s on %s)", layout.transformer_dir, dtype, device)
    model = AutoModel.from_pretrained(
        layout.transformer_dir, attn_implementation="sdpa", dtype=dtype, local_files_only=True
    )
    # The pooler (a dense layer and tanh over the first token) feeds no pooling mode sentence-transformers
    # has; models whose forward skips a missing one (BERT, RoBERTa, MPNet, ...) lose it, and its kernels.
    if getattr(model, "pooler", None) is not None and _builds_without_pooler(model):
        model.pooler = None
    return model.to(device).eval()


def _builds_without_pooler(model: torch.nn.Module) -> bool:
    return "add_pooling_layer" in inspect.signature(type(model).__init__).parameters


def _ready_mask(real: torch.Tensor) -> torch.Tensor:
    """(batch, 1, 1, length) boolean mask, True on real tokens: what SDPA takes, broadcast over heads and queries."""
    return real[:, None, None, :]


def _takes_ready_mask(model: torch.nn.Module, token: int, device: torch.device) -> bool:
    """Whether ``model`` uses a ready boolean attention mask as given, with the same result as its 2-D mask.

    Given a 2-D mask, models built on transformers' mask utilities first check whether any token is
    padded at all, which reads the mask back from the GPU: a host sync in every padded forward pass (the
    host then cannot queue the next pass while the GPU computes), plus the Python that builds a
    (batch, 1, length, length) mask. A 4-D mask goes to attention unchanged. Older model code rejects it
    or reads it differently, so the answer is measured on a small mixed-length batch, not assumed.
    """
    lengths = torch.tensor([4, 2], device=device)
    input_ids = torch.full((2, 4), token, dtype=torch.long, device=device)
    real = torch.arange(4, device=device)[None, :] < lengths[:, None]
    try:
        with torch.inference_mode():
            expected = model(input_ids=input_ids, attention_mask=real.long()).last_hidden_state
            given = model(input_ids=input_ids, attention_mask=_ready_mask(real)).last_hidden_state
    except Exception as error:  # any failure means: keep the 2-D mask
        log.debug("the model does not take a ready attention mask (%s); keeping the 2-D mask", error)
        return False
    if given.shape != expected.shape:
        return False
    tolerance = 1e-4 if expected.dtype == torch.float32 else 2e-2
    scale = float(expected[real].abs().max()) or 1.0
    return bool((given[real] - expected[real]).abs().max() <= tolerance * scale)
