"""argparse types shared by kgpu's process entry points (replica, operator, in-cluster gateway).

A flag out of range must stop the process at once with a line naming it, not start a server that dies
later in bind() or in logging's level lookup with a traceback.
"""

from __future__ import annotations

import argparse
import math

# logging's levels; processes serving through uvicorn also have its "trace".
LOGGING_LEVELS = ("critical", "error", "warning", "info", "debug")
UVICORN_LEVELS = (*LOGGING_LEVELS, "trace")


def _whole_number(text: str, low: int, high: int | None, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"{value} is not {what}")
    return value


def port(text: str) -> int:
    return _whole_number(text, 1, 65535, "a port number (1-65535)")


def positive_int(text: str) -> int:
    return _whole_number(text, 1, None, "a whole number of at least 1")


def positive_seconds(text: str) -> float:
    """A finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number of seconds above 0")
    return value


def add_log_level(parser: argparse.ArgumentParser, levels: tuple[str, ...] = LOGGING_LEVELS) -> None:
    parser.add_argument("--log-level", default="info", type=str.lower, choices=levels)
