"""BERT encoders run on the real tokens only, through PyTorch's fast path for transformer encoders.

A padded batch computes every layer on every padding position too. With the serving mix of 5-60-word
sentences, sorted into chunks by length, 17-27 % of the tokens of a batch of 32-64 are padding
(bench/README.md). ``torch.nn.TransformerEncoder`` has an inference fast path that turns a padded
batch and its padding mask into a nested tensor and runs each layer on the real tokens only. This
module builds one over a Hugging Face BERT encoder's own weights (shared, not copied); the model's
embeddings run before it, and pooling after it as before.

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
    if not config.num_hidden_layers:
        # PyTorch's encoder reads its first layer to decide on the fast path, and with no layers
        # there is nothing to skip padding in anyway.
        return "the encoder has no layers"
    return None  # what PyTorch's fast path itself requires, it checks in unpadded_bert


def unpadded_bert(model: nn.Module) -> UnpaddedBertEncoder | None:
    """The model's encoder as a PyTorch fast-path encoder over the same weights, or None when it does not fit.

    The weights are shared, not copied: the fast layers hold the model's own linear and norm modules,
    and the model's query, key and value weights become views of the fast layer's packed projection.
    """
    reason = why_not_unpadded(model)
    if reason is not None:
        log.info("padded forward: %s", reason)
        return None
    config = model.config
    # The constructor clones its template once per layer; on the meta device that costs nothing.
    # It also checks what its fast path needs (an even head count, ...) and warns why not.
    with warnings.catch_warnings(record=True) as refusals:
        warnings.simplefilter("always")
        encoder = nn.TransformerEncoder(
            _meta_layer(config),
            num_layers=len(model.encoder.layer),
            enable_nested_tensor=True,
            mask_check=False,  # the engine pads on the right, so the mask is left-aligned by construction
        )
    if not encoder.use_nested_tensor:
        reason = "; ".join(str(w.message) for w in refusals) or "PyTorch's encoder fast path refused it"
        log.info("padded forward: %s", reason)
        return None
    encoder.layers = nn.ModuleList(_shared_layer(layer, config) for layer in model.encoder.layer)
    return UnpaddedBertEncoder(model.embeddings, encoder).eval()


def _meta_layer(config) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=config.layer_norm_eps,
        batch_first=True,
        norm_first=False,
        device="meta",
    )


def _shared_layer(layer: nn.Module, config) -> nn.TransformerEncoderLayer:
    attention = layer.attention
    fast = _meta_layer(config)
    fast.self_attn.out_proj = attention.output.dense
    fast.norm1 = attention.output.LayerNorm
    fast.linear1 = layer.intermediate.dense
    fast.linear2 = layer.output.dense
    fast.norm2 = layer.output.LayerNorm
    # PyTorch's attention wants query, key and value as one packed projection. The model's three
    # then read their rows of it, so the weights still exist once.
    projections = (attention.self.query, attention.self.key, attention.self.value)
    with torch.no_grad():
        packed_weight = torch.cat([p.weight for p in projections])
        packed_bias = torch.cat([p.bias for p in projections])
    fast.self_attn.in_proj_weight = nn.Parameter(packed_weight, requires_grad=False)
    fast.self_attn.in_proj_bias = nn.Parameter(packed_bias, requires_grad=False)
    size = config.hidden_size
    for index, projection in enumerate(projections):
        rows = slice(index * size, (index + 1) * size)
        projection.weight = nn.Parameter(fast.self_attn.in_proj_weight[rows], requires_grad=False)
        projection.bias = nn.Parameter(fast.self_attn.in_proj_bias[rows], requires_grad=False)
    return fast
