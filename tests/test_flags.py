"""Flags of kgpu's process entry points: a bad value stops the process naming its flag (argparse's exit 2)."""

from __future__ import annotations

import pytest

from kgpu.backends.kubernetes.__main__ import build_parser as operator_parser
from kgpu.controlplane.in_cluster import build_parser as gateway_parser
from kgpu.serving.__main__ import parse_args as replica_args


def replica_parse(flags: list[str]):
    return replica_args(["--model-uri", "m", "--served-name", "s", *flags])


@pytest.mark.parametrize(
    ("parse", "flags", "named"),
    [
        (operator_parser().parse_args, ["--log-level", "trace"], "--log-level"),  # logging has no "trace"
        (operator_parser().parse_args, ["--log-level", "loud"], "--log-level"),
        (operator_parser().parse_args, ["--resync", "nan"], "--resync"),
        (operator_parser().parse_args, ["--resync", "0"], "--resync"),
        (operator_parser().parse_args, ["--drain-timeout", "-5"], "--drain-timeout"),
        (gateway_parser().parse_args, ["--port", "99999"], "--port"),
        (gateway_parser().parse_args, ["--port", "http"], "--port"),
        (replica_parse, ["--port", "0"], "--port"),
    ],
)
def test_a_bad_flag_is_a_usage_error_naming_it(parse, flags: list[str], named: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(flags)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_good_values_pass_through() -> None:
    args = operator_parser().parse_args(["--log-level", "DEBUG", "--resync", "2.5", "--drain-timeout", "45"])
    assert (args.log_level, args.resync, args.drain_timeout) == ("debug", 2.5, 45)
    assert gateway_parser().parse_args(["--port", "8080"]).port == 8080
    assert replica_parse(["--log-level", "trace", "--port", "1"]).log_level == "trace"
