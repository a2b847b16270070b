"""BERT encoders run on the real tokens only, through PyTorch's fast path for transformer encoders.

A padded batch computes every layer on every padding position too. With the serving mix of 5-60-word
sentences, sorted into chunks by length, 17-27 % of the tokens of a batch of 32-64 are padding
(bench/README.md). ``torch.nn.TransformerEncoder`` has an inference fast path that turns a padded
batch and its padding mask into a nested tensor and runs each layer on the real tokens only. This
module copies a Hugging Face BERT encoder's layer weights into one; the model's own embeddings run
before it, and pooling after it as before.

Only encoders whose layers are exactly a ``TransformerEncoderLayer`` qualify: BERT with absolute
position embeddings, exact GELU and post-layer norm. Anything else keeps the Hugging Face forward.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

# PyTorch warns once that nested tensors are a prototype API; the encoder fast path that uses them
# internally is stable, and the warning would only confuse the replica's log.
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors", category=UserWarning)


class UnpaddedBertEncoder(nn.Module):
    """The model's embeddings, then its layers as a PyTorch fast-path encoder; padded output is 0."""

    def __init__(self, embeddings: nn.Module, encoder: nn.TransformerEncoder) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embeddings(input_ids=input_ids)
        return self.encoder(hidden, src_key_padding_mask=attention_mask == 0)


def why_not_unpadded(model: nn.Module) -> str | None:
    """Why ``model`` cannot run unpadded (None when it can)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) != "bert":
        return f"model type {getattr(config, 'model_type', None)!r} is not 'bert'"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position embeddings are {config.position_embedding_type!r}, not absolute"
    if config.hidden_act != "gelu":
        return f"activation {config.hidden_act!r} is not exact GELU"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "the model is a decoder"
    if config.num_attention_heads % 2:
        return "an odd number of attention heads leaves PyTorch's fast path"
    return None


def unpadded_bert(model: nn.Module) -> UnpaddedBertEncoder | None:
    """An unpadded copy of a Hugging Face BERT encoder's weights, or None when the model does not fit."""
    reason = why_not_unpadded(model)
    if reason is not None:
        log.info("padded forward: %s", reason)
        return None
    config = model.config
    layers = nn.ModuleList(_encoder_layer(layer, config) for layer in model.encoder.layer)
    # The engine pads on the right, so PyTorch's check that the mask is left-aligned is skipped.
    encoder = nn.TransformerEncoder(
        layers[0], num_layers=len(layers), enable_nested_tensor=True, mask_check=False
    )
    encoder.layers = layers  # the constructor deep-copies its template; these hold the real weights
    if not encoder.use_nested_tensor:
        log.info("padded forward: PyTorch's encoder fast path is not available for this model")
        return None
    first = next(model.parameters())
    return UnpaddedBertEncoder(model.embeddings, encoder).to(first.device, first.dtype).eval()


def _encoder_layer(layer: nn.Module, config) -> nn.TransformerEncoderLayer:
    attention = layer.attention
    fast = nn.TransformerEncoderLayer(
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=config.layer_norm_eps,
        batch_first=True,
        norm_first=False,
    )
    query, key, value = attention.self.query, attention.self.key, attention.self.value
    with torch.no_grad():
        fast.self_attn.in_proj_weight.copy_(torch.cat([query.weight, key.weight, value.weight]))
        fast.self_attn.in_proj_bias.copy_(torch.cat([query.bias, key.bias, value.bias]))
        fast.self_attn.out_proj.load_state_dict(attention.output.dense.state_dict())
        fast.norm1.load_state_dict(attention.output.LayerNorm.state_dict())
        fast.linear1.load_state_dict(layer.intermediate.dense.state_dict())
        fast.linear2.load_state_dict(layer.output.dense.state_dict())
        fast.norm2.load_state_dict(layer.output.LayerNorm.state_dict())
    return fast
