"""Which encoders run unpadded, on small random BERT models built from a config (no weights to fetch)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from kgpu.serving.unpadded import unpadded_bert, why_not_unpadded


def tiny_bert(**overrides) -> BertModel:
    settings = {
        "vocab_size": 100,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    config = BertConfig(**{**settings, **overrides}, attn_implementation="sdpa")
    torch.manual_seed(0)
    return BertModel(config).eval()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"position_embedding_type": "relative_key"}, "position embeddings are 'relative_key'"),
        ({"hidden_act": "gelu_new"}, "activation 'gelu_new' is not exact GELU"),
        ({"is_decoder": True}, "decoder"),
        ({"num_hidden_layers": 0}, "no layers"),  # embeddings and pooling only: a cheap test model
    ],
)
def test_encoders_outside_the_fast_path_keep_the_padded_forward(overrides, reason) -> None:
    model = tiny_bert(**overrides)
    assert reason in why_not_unpadded(model)
    assert unpadded_bert(model) is None


def test_pytorchs_own_fast_path_checks_decide_and_its_reason_is_logged(caplog) -> None:
    model = tiny_bert(num_attention_heads=1)  # fine for BERT, not for PyTorch's nested-tensor path
    assert why_not_unpadded(model) is None
    with caplog.at_level("INFO", logger="kgpu.serving.unpadded"):
        assert unpadded_bert(model) is None
    assert "num_heads is odd" in caplog.text


def test_a_model_that_is_not_bert_keeps_the_padded_forward() -> None:
    assert "is not 'bert'" in why_not_unpadded(torch.nn.Linear(2, 2))


def test_unpadded_encoder_of_a_random_bert_matches_it_on_every_real_token() -> None:
    model = tiny_bert()
    assert why_not_unpadded(model) is None
    lengths = torch.tensor([9, 5, 2])
    input_ids = torch.randint(1, 100, (3, 9))
    mask = (torch.arange(9)[None, :] < lengths[:, None]).long()
    input_ids[mask == 0] = 0
    with torch.inference_mode():
        before = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    fast = unpadded_bert(model)
    assert fast is not None
    with torch.inference_mode():
        after = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        ours = fast(input_ids, mask)
    torch.testing.assert_close(after, before)  # sharing the weights left the model as it was
    real = mask.bool()
    torch.testing.assert_close(ours[real], before[real], atol=1e-5, rtol=1e-4)
    assert torch.count_nonzero(ours[~real]) == 0


def test_unpadded_encoder_shares_the_models_weights() -> None:
    model = tiny_bert()
    fast = unpadded_bert(model)
    assert fast is not None
    assert not any(p.is_meta for p in fast.parameters())
    model_memory = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert {p.untyped_storage().data_ptr() for p in fast.parameters()} <= model_memory
