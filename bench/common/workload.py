"""The request mix every system is measured with: deterministic English sentences of 5-60 words.

Words come from the model's own WordPiece vocabulary (whole words only, no ``##`` pieces, no special
tokens), so every sentence is made of real English words and the mix is identical on every machine for
the same seed. A fixed fallback list keeps the script usable when no vocabulary file is at hand.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

MIN_WORDS = 5
MAX_WORDS = 60
DEFAULT_SEED = 20240601

# Used only when the model directory has no vocab.txt; common English words.
_FALLBACK_TEXT = (
    "the of and to in is was for that on as with by he at from his an were are which this be or had "
    "not but first one their its new after who they have her she two been other when there all during "
    "into school time may years more most only over city some world would where later up such used many "
    "can state about national out known university united then made team american three film born year "
    "people also part season being high new between following however well under number south member "
    "several back series called became both while group first war north before second game since through "
    "album life these until home around early center public work large music house family including "
    "village played river system best each county released west water another within government because "
    "last same company church found did like could said long left end four each power light small open"
)
_FALLBACK_WORDS = tuple(_FALLBACK_TEXT.split())

_WORD = re.compile(r"^[a-z]+$")


def load_vocabulary(model_dir: str | Path | None) -> list[str]:
    """Whole English words from the model's vocab.txt (sorted, deduplicated), or the fallback list."""
    words: set[str] = set()
    if model_dir is not None:
        vocab_file = Path(model_dir) / "vocab.txt"
        if vocab_file.is_file():
            for line in vocab_file.read_text(encoding="utf-8").splitlines():
                token = line.strip()
                # Two letters minimum drops the single-letter entries that are mostly initials.
                if _WORD.match(token) and (len(token) >= 2 or token in ("a", "i")):
                    words.add(token)
    if len(words) < 1000:
        words = set(_FALLBACK_WORDS)
    return sorted(words)


def make_sentences(
    count: int,
    seed: int = DEFAULT_SEED,
    vocabulary: list[str] | None = None,
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
) -> list[str]:
    """``count`` sentences with a uniform word count in [min_words, max_words], same output for same seed."""
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    words = vocabulary or list(_FALLBACK_WORDS)
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        n = rng.randint(min_words, max_words)
        chosen = [rng.choice(words) for _ in range(n)]
        # A comma now and then, a capital and a full stop: the tokenizer sees what real text looks like.
        for i in range(3, n - 2, 9):
            chosen[i] += ","
        chosen[0] = chosen[0].capitalize()
        sentences.append(" ".join(chosen) + ".")
    return sentences


def word_counts(sentences: list[str]) -> dict[str, float]:
    """Summary of the mix, recorded with the results so a reader knows what was sent."""
    counts = sorted(len(s.split()) for s in sentences)
    return {
        "sentences": len(counts),
        "min_words": counts[0],
        "max_words": counts[-1],
        "mean_words": round(sum(counts) / len(counts), 2),
        "median_words": counts[len(counts) // 2],
    }


# The served model's name in requests, and what every server's readiness probe sends.
SERVED_NAME = "minilm"
PROBE_SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
SENTENCE_POOL = 4096


def request_bodies(sentences: list[str], inputs_per_request: int) -> list[bytes]:
    """Pre-encoded JSON bodies (the client never re-serializes); N consecutive sentences per request."""
    bodies = []
    for i in range(len(sentences)):
        if inputs_per_request == 1:
            payload_input: str | list[str] = sentences[i]
        else:
            payload_input = [sentences[(i + j) % len(sentences)] for j in range(inputs_per_request)]
        bodies.append(json.dumps({"model": SERVED_NAME, "input": payload_input}).encode())
    return bodies


def workload_bodies(mdir: str, inputs_per_request: int, seed: int = DEFAULT_SEED) -> list[bytes]:
    """The benchmarks' request bodies: mixed-length sentences over the served model's vocabulary."""
    return request_bodies(make_sentences(SENTENCE_POOL, seed, load_vocabulary(mdir)), inputs_per_request)


def probe_body(inputs_per_request: int) -> bytes:
    payload_input = PROBE_SENTENCE if inputs_per_request == 1 else [PROBE_SENTENCE] * inputs_per_request
    return json.dumps({"model": SERVED_NAME, "input": payload_input}).encode()
