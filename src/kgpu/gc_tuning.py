"""Keep a server's long-lived objects out of Python's garbage collector once it has started.

A replica holds about 400,000 objects once PyTorch, transformers and its model are loaded; a full
collection walks all of them, and on a 2-core machine that took about 240 ms: every request in flight
then waited, and the p99 latency at concurrency 64 was 5-6x the p50 (bench/README.md, "Serving overhead
with a cheap model"). Frozen objects are never scanned again (cycles among them are never collected
either, which suits objects that live as long as the process). Requests allocate a few thousand short-lived
objects each; collecting the youngest generation every 700 allocations (the default) ran several
collections per request, so the thresholds rise too.
"""

from __future__ import annotations

import gc


def freeze_what_is_loaded() -> None:
    """Call once start-up is done (modules imported, model loaded and warmed up)."""
    gc.collect()  # free start-up garbage first, so it is not frozen for good
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
