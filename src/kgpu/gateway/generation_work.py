"""How much work a generation request brings, estimated from its body without the model's tokenizer.

The router weighs replicas by the tokens they still have to process (kgpu.gateway.registry.Endpoint.work):
a long prompt or a long answer is more work than a short one, which request counts alone cannot see. The
gateway has no tokenizer, so prompts count at the usual four characters per token; answers count at the
request's own limit (or the replica's default when it sets none).
"""

from __future__ import annotations

from typing import Any

CHARS_PER_TOKEN = 4
# What a replica generates when a request sets no limit (kgpu.serving.generation_params and generation_v2).
DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHAT_TOKENS = 256  # a chat answer without a limit runs to EOS; a typical answer's length
DEFAULT_V2_TOKENS = 64


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item) for item in value)
    if isinstance(value, dict):
        return _text_length(value.get("content")) + _text_length(value.get("text"))
    if isinstance(value, int):
        return CHARS_PER_TOKEN  # a token id
    return 0


def _limit(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def generation_work(path: str, payload: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, tokens to generate) of an OpenAI or v2 generate request; (0, 0) for anything else."""
    if path == "/v1/completions":
        prompt = _text_length(payload.get("prompt")) // CHARS_PER_TOKEN
        return prompt, _limit(payload.get("max_tokens"), DEFAULT_COMPLETION_TOKENS)
    if path == "/v1/chat/completions":
        prompt = _text_length(payload.get("messages")) // CHARS_PER_TOKEN
        limit = payload.get("max_completion_tokens", payload.get("max_tokens"))
        return prompt, _limit(limit, DEFAULT_CHAT_TOKENS)
    if path.endswith(("/generate", "/generate_stream")):
        parameters = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
        prompt = _text_length(payload.get("text_input")) // CHARS_PER_TOKEN
        return prompt, _limit(parameters.get("max_tokens"), DEFAULT_V2_TOKENS)
    return 0, 0
