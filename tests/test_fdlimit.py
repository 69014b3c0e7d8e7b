"""A large fleet needs open files: the soft limit is raised, or one clear error."""

from __future__ import annotations

import types

import pytest

from sollol_dask import ConfigurationError
from sollol_dask.engine._fdlimit import ensure_fd_limit


def fake_resource(soft: int, hard: int):
    limits = {"now": (soft, hard)}
    return types.SimpleNamespace(
        RLIMIT_NOFILE=7, RLIM_INFINITY=-1,
        getrlimit=lambda which: limits["now"],
        setrlimit=lambda which, value: limits.update(now=value), limits=limits)


def test_the_soft_limit_is_raised_when_the_hard_one_allows():
    res = fake_resource(1024, 65536)
    assert ensure_fd_limit(2048, resource_module=res) == 2048 + 256
    assert res.limits["now"] == (2304, 65536)


def test_a_limit_too_low_names_the_limit_and_the_fix():
    with pytest.raises(ConfigurationError) as info:
        ensure_fd_limit(2048, resource_module=fake_resource(1024, 1024))
    assert str(info.value) == (
        "the fleet may need 2304 open files (2048 connections, one per slot, plus 256) but "
        "this process may open at most 1024 (RLIMIT_NOFILE, ulimit -n): raise it (ulimit -n "
        "2304, or LimitNOFILE= in a systemd unit) for the worker processes, or lower the "
        "nodes' max_inflight")


def test_a_limit_high_enough_is_left_alone():
    res = fake_resource(20000, 20000)
    assert ensure_fd_limit(2048, resource_module=res) == 20000
