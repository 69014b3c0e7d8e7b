"""This process's slot source, on a real loop but without sockets or sleeps."""

from __future__ import annotations

import asyncio

import pytest

from sollol_dask import NoNodeAvailableError
from sollol_dask._outcome import CANCELLED, Outcome
from sollol_dask.engine._slots import LocalSlots
from sollol_dask.policy._balancer import SlotBalancer


def test_slots_go_to_the_oldest_job_and_come_back_with_the_outcome(clock):
    async def main():
        slots = LocalSlots(SlotBalancer(["n"], [1], clock=clock))
        first = await slots.acquire(frozenset(), priority=1.0)
        late = asyncio.ensure_future(slots.acquire(frozenset(), priority=9.0))
        early = asyncio.ensure_future(slots.acquire(frozenset(), priority=2.0))
        await asyncio.sleep(0)
        assert not late.done() and not early.done() and slots.waiting
        slots.release(first, Outcome(texts=4, seconds=0.5))
        grant = await early
        assert grant.node == "n" and grant.contended  # the later job still waits
        assert slots.balancer.nodes["n"].texts == 4
        slots.release(grant, CANCELLED)
        assert (await late).node == "n" and not slots.waiting

    asyncio.run(main())


def test_waiters_fail_at_once_when_no_node_can_take_work(clock):
    async def main():
        slots = LocalSlots(SlotBalancer(["n"], [1], clock=clock))
        await slots.acquire(frozenset())
        waiting = asyncio.ensure_future(slots.acquire(frozenset()))
        await asyncio.sleep(0)
        slots.fail_waiters(NoNodeAvailableError("none left"))
        with pytest.raises(NoNodeAvailableError):
            await waiting

    asyncio.run(main())
