"""Text a workload wrote, made safe to show: no terminal escapes or other control characters.

A replica's status message carries words its own server or probe wrote (its last log line locally,
the kubelet's probe failure or crash-loop message on Kubernetes: an exec probe's output is the
tenant's), and `kgpu describe` and `kgpu get` print it on whoever reads the status, where an escape
sequence would act on the reader's terminal. Both backends pass such text through here.
"""

from __future__ import annotations

import re

# CSI sequences (colours, cursor moves) whole, then any other C0/C1 control character.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x1f\x7f-\x9f]")


def shown(text: str, limit: int = 300) -> str:
    """`text` without control characters (a line break becomes a space), stripped, cut to `limit`."""
    return _CONTROL.sub(lambda m: " " if m.group() in "\n\r\t" else "", text).strip()[:limit].rstrip()
