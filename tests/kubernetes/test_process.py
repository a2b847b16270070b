"""The operator's and the scheduler's start: a configuration that cannot be loaded is a one-line error."""

from __future__ import annotations

import pytest

from kgpu.backends.kubernetes.__main__ import build_parser as operator_parser
from kgpu.backends.kubernetes.process import connect
from kgpu.backends.kubernetes.scheduler import build_parser as scheduler_parser


@pytest.mark.parametrize("parser", [operator_parser, scheduler_parser])
def test_a_kubeconfig_that_cannot_be_read_is_named_in_a_one_line_error(parser, tmp_path):
    missing = tmp_path / "nope"
    args = parser().parse_args(["--kubeconfig", str(missing)])
    with pytest.raises(SystemExit, match=f"error: --kubeconfig {missing}: "):
        connect(args)


def test_outside_a_cluster_without_a_kubeconfig_the_error_says_so(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit, match="error: in-cluster configuration: "):
        connect(scheduler_parser().parse_args([]))
