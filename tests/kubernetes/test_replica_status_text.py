"""A Kubernetes replica's status message carries the kubelet's words, which can be the workload's own
(an exec probe's output): `kgpu describe` prints them, so terminal escapes must not get through."""

from __future__ import annotations

from kgpu.backends.kubernetes.status import replica_status
from kgpu.terminal_text import shown

NOW = "2026-12-05T12:00:30Z"


def _loading_pod() -> dict:
    return {
        "metadata": {"name": "minilm-0"},
        "spec": {"nodeName": "gpu-1"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "ready": False,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-12-05T12:00:00Z"}},
                }
            ],
        },
    }


def test_an_exec_probes_escape_sequences_do_not_reach_the_status_message() -> None:
    event = {
        "reason": "Unhealthy",
        "involvedObject": {"name": "minilm-0"},
        "lastTimestamp": "2026-12-05T12:00:20Z",
        "message": "Readiness probe failed: \x1b]0;owned\x07\x1b[2J\x1b[31mloading\x1b[0m shard 3\nof 4",
    }
    replica = replica_status(_loading_pod(), [event], NOW)
    assert replica["phase"] == "Loading"
    assert replica["message"] == "loading for 30s: Readiness probe failed: ]0;ownedloading shard 3 of 4"
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in replica["message"])


def test_a_crash_loop_message_is_shown_without_control_characters_and_bounded() -> None:
    pod = _loading_pod()
    pod["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off \x1b[1A\x9b" + "x" * 5000}
    }
    replica = replica_status(pod, [], NOW)
    assert replica["phase"] == "CrashLoopBackOff"
    assert replica["message"].startswith("back-off x") and len(replica["message"]) == 300


def test_shown_keeps_printable_text_and_turns_line_breaks_into_spaces() -> None:
    assert shown("Readiness probe failed: HTTP probe failed with statuscode: 503") == (
        "Readiness probe failed: HTTP probe failed with statuscode: 503"
    )
    assert shown("a\r\nb\tc", limit=3) == "a"  # "a  b c" cut to 3, stripped
    assert shown("\x1b[32mok\x1b[0m") == "ok"
