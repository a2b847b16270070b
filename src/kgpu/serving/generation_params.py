"""Validation of OpenAI chat and completions requests into one GenerationRequest, with 400s that name the field.

Fields are checked by hand, as for embeddings, so each refusal says exactly what was wrong. A field this server
does not know, or one whose value would change the answer in a way it does not support (logprobs, penalties,
tools, n > 1), is refused by name rather than ignored: a client must never get a different answer than it asked
for without knowing. Fields that cannot change the answer (user, metadata, store) are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kgpu.serving.errors import bad_request
from kgpu.serving.generation_engine import GenerationRequest
from kgpu.serving.sampling import Sampling

_COMMON = {
    "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "seed", "stop", "n", "user",
    "presence_penalty", "frequency_penalty", "logprobs", "logit_bias", "metadata", "store", "service_tier",
}  # fmt: skip
COMPLETIONS_FIELDS = _COMMON | {"prompt", "echo", "best_of", "suffix"}
CHAT_FIELDS = _COMMON | {
    "messages", "max_completion_tokens", "top_logprobs", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "stream_options", "modalities",
}  # fmt: skip
_ROLES = ("system", "developer", "user", "assistant")
_MAX_STOPS = 4
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True)
class ParsedRequest:
    request: GenerationRequest
    stream: bool
    include_usage: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse_unknown(body: dict[str, Any], known: set[str]) -> None:
    for name in body:
        if name not in known:
            raise bad_request(f"unknown or unsupported field '{name}'", name)


def _refuse_unless(body: dict[str, Any], name: str, allowed: tuple[Any, ...], why: str) -> None:
    if name in body and body[name] not in allowed:
        raise bad_request(f"'{name}' = {body[name]!r} is not supported: {why}", name)


def _check_unsupported(body: dict[str, Any]) -> None:
    _refuse_unless(body, "n", (None, 1), "this server returns one choice per request (n must be 1)")
    _refuse_unless(
        body, "best_of", (None, 1), "this server returns one choice per request (best_of must be 1)"
    )
    _refuse_unless(body, "presence_penalty", (None, 0, 0.0), "penalties are not implemented (send 0)")
    _refuse_unless(body, "frequency_penalty", (None, 0, 0.0), "penalties are not implemented (send 0)")
    _refuse_unless(body, "logprobs", (None, False, 0), "log probabilities are not returned")
    _refuse_unless(body, "top_logprobs", (None, 0), "log probabilities are not returned")
    _refuse_unless(body, "echo", (None, False), "the prompt is not echoed")
    _refuse_unless(body, "suffix", (None, ""), "insertion (suffix) is not supported")
    _refuse_unless(body, "tools", (None, []), "tool calls are not supported")
    _refuse_unless(body, "tool_choice", (None, "none"), "tool calls are not supported")
    _refuse_unless(body, "modalities", (None, ["text"]), "only text is generated")
    if body.get("logit_bias") not in (None, {}):
        raise bad_request("'logit_bias' is not supported", "logit_bias")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise bad_request("'response_format' other than {'type': 'text'} is not supported", "response_format")


def _sampling(body: dict[str, Any]) -> Sampling | None:
    temperature = body.get("temperature")
    if temperature is None:
        temperature = 1.0  # OpenAI's default
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        raise bad_request(f"'temperature' must be a number from 0 to 2, got {temperature!r}", "temperature")
    top_p = body.get("top_p")
    if top_p is None:
        top_p = 1.0
    if not _is_number(top_p) or not 0 < top_p <= 1:
        raise bad_request(f"'top_p' must be a number above 0 and at most 1, got {top_p!r}", "top_p")
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not -(2**63) <= seed < 2**63):
        raise bad_request(f"'seed' must be a 64-bit integer, got {seed!r}", "seed")
    if temperature == 0:
        return None  # greedy: top_p and seed cannot change the answer
    return Sampling(float(temperature), float(top_p), seed)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise bad_request("'stop' must be a string or an array of strings", "stop")
    if len(stop) > _MAX_STOPS:
        raise bad_request(f"'stop' has {len(stop)} strings; at most {_MAX_STOPS}", "stop")
    if any(not item for item in stop):
        raise bad_request("'stop' strings must not be empty", "stop")
    return tuple(stop)


def _stream(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request(f"'stream' must be true or false, got {stream!r}", "stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options")
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    for key in options:
        if key != "include_usage":
            raise bad_request(f"unknown field 'stream_options.{key}'", f"stream_options.{key}")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise bad_request(
            "'stream_options.include_usage' must be true or false", "stream_options.include_usage"
        )
    return stream, include_usage


def _max_tokens(
    body: dict[str, Any], name: str, prompt_tokens: int, context: int, default: int | None
) -> int:
    room = context - prompt_tokens
    if room < 1:
        raise bad_request(
            f"the prompt has {prompt_tokens} tokens; this model's context is {context} tokens, "
            f"which leaves no room for an answer",
            "messages" if name == "max_completion_tokens" else "prompt",
        )
    value = body.get(name)
    if value is None:
        return room if default is None else min(default, room)
    if not _is_int(value) or value < 1:
        raise bad_request(f"'{name}' must be a positive integer, got {value!r}", name)
    if value > room:
        raise bad_request(
            f"'{name}' is {value} and the prompt has {prompt_tokens} tokens: {prompt_tokens + value} in all, "
            f"more than this model's context of {context} tokens",
            name,
        )
    return value


def parse_common(
    body: dict[str, Any], prompt_ids: list[int], context: int, max_name: str, default_max: int | None
) -> ParsedRequest:
    _check_unsupported(body)
    stream, include_usage = _stream(body)
    sampling = _sampling(body)
    stop = _stop(body)
    max_tokens = _max_tokens(body, max_name, len(prompt_ids), context, default_max)
    return ParsedRequest(GenerationRequest(prompt_ids, max_tokens, sampling, stop), stream, include_usage)


def completion_prompt(body: dict[str, Any]) -> str | list[int]:
    """The prompt of a completions request: one string, or one array of token ids."""
    _refuse_unknown(body, COMPLETIONS_FIELDS)
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request("'prompt' is required", "prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if not prompt:
            raise bad_request("'prompt' is an empty string", "prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(_is_int(token) for token in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(item, (str, list)) for item in prompt):
        raise bad_request(f"'prompt' holds {len(prompt)} prompts; send one prompt per request", "prompt")
    raise bad_request("'prompt' must be a non-empty string or an array of token ids", "prompt")


def check_token_ids(ids: list[int], vocab_size: int) -> None:
    for index, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise bad_request(
                f"prompt[{index}] = {token} is not a token id of this model (0 to {vocab_size - 1})", "prompt"
            )


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation, each message's content as one string."""
    _refuse_unknown(body, CHAT_FIELDS)
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise bad_request("send one of 'max_tokens' and 'max_completion_tokens', not both", "max_tokens")
    messages = body.get("messages")
    if messages is None:
        raise bad_request("'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty array of messages", "messages")
    conversation = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with 'role' and 'content'", where)
        for key in message:
            if key not in ("role", "content", "name"):
                raise bad_request(f"{where}.{key} is not supported", f"{where}.{key}")
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"{where}.role must be one of {', '.join(_ROLES)}; got {role!r}", f"{where}.role"
            )
        conversation.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    return conversation


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad_request(
                    f"{where}[{index}] must be a text part {{'type': 'text', 'text': ...}}", where
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{where} must be a string or an array of text parts", where)
