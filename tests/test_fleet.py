"""Fleet membership, socket-free: exclusion of a node that would mix vectors, eject and
restore, warm-up of a cold node. Fake clock, injected sleep: no test waits."""

from __future__ import annotations

import asyncio
import warnings

import numpy as np
import pytest

import sollol_dask as sd
from sollol_dask.policy._balancer import Health
from sollol_dask.testing.mock import FakeOllama, vector

from .engine_harness import Harness

A, B = "http://a:1", "http://b:1"


def test_a_node_of_another_dimension_is_excluded_with_a_warning_in_the_callers_thread(clock):
    h = Harness({A: FakeOllama(), B: FakeOllama(dimension=8)}, clock)
    ref = h.run(lambda r: r.fleet.ready())
    assert ref.dimension == 4 and h.state(B).health is Health.EXCLUDED
    assert "dimension 8" in h.state(B).reason
    # Kept for the thread that called, not raised on the loop.
    assert [m for m in h.router.fleet.take_warnings() if B in m and "dimension 8" in m]
    assert h.router.fleet.take_warnings() == []


def test_the_sync_facade_raises_exclusion_warnings_where_it_was_called(clock):
    h = Harness({A: FakeOllama(), B: FakeOllama(digest="sha256:bbbb")}, clock)
    try:
        with pytest.warns(sd.FleetWarning, match=f"node {B} excluded: .*digest sha256:bbbb"):
            vectors = h.router.embed(["a"])
        assert np.array_equal(vectors, vector("a", 4)[None])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            h.router.embed(["b"])  # warned once
    finally:
        h.router.close()


def test_a_refusing_node_is_ejected_then_restored_by_a_reprobe(clock):
    down = {"now": True}

    def refuse(request):
        if down["now"]:
            raise sd.NodeError(f"cannot connect to {B}", node=B, failure=sd.Failure.TRANSIENT,
                               hard=True)
        return None

    h = Harness({A: FakeOllama(), B: FakeOllama(fail=refuse)}, clock)

    async def scenario(router):
        await router.fleet.ready()
        assert h.state(B).health is Health.EJECTED  # its fleet check failed
        router.fleet.supervise()
        assert h.state(B).health is Health.EJECTED  # back-off not over
        clock.advance(h.state(B).retry_at - clock())
        down["now"] = False
        router.fleet.supervise()  # due: re-probed in a task
        assert h.state(B).health is Health.PROBING
        for _ in range(10):
            await asyncio.sleep(0)
        return h.state(B).health

    assert h.run(scenario) is Health.UP


def test_a_cold_node_is_warmed_before_it_gets_batches(clock):
    seen = []

    def note_state(request):
        if request.path == "/api/embed":
            seen.append((request.json()["input"], h.state(A).health))
        return None

    cold = FakeOllama(loaded=False, fail=note_state)
    h = Harness({A: cold}, clock)
    vectors = h.run(lambda r: r.aembed(["a"]))
    assert np.array_equal(vectors, vector("a", 4)[None]) and cold.loaded
    # The load (an empty input) while the node is kept out, then the batch.
    assert seen == [([], Health.WARMING), (["a"], Health.UP)]


def test_closing_the_router_leaves_no_task_behind(clock):
    h = Harness({A: FakeOllama(), B: FakeOllama(loaded=False)}, clock)

    async def scenario(router):
        await router.aembed(["a", "b"])  # starts the supervisor and a warm-up
        await router._aclose()
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert h.run(scenario) == set()
