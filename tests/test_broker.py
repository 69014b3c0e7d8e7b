"""The scheduler-side slot broker: leases, FIFO across workers, caps, dead workers."""

from __future__ import annotations

import asyncio
import types

from sollol_dask.cluster._broker import SlotBroker


def run(coro):
    return asyncio.run(coro)


async def started_broker() -> SlotBroker:
    broker = SlotBroker()
    await broker.start(types.SimpleNamespace(handlers={}))  # only the handler table is used
    return broker


def test_leases_respect_caps_and_are_fifo_across_workers():
    async def scenario():
        broker = await started_broker()
        first = await broker.acquire("w1", {"a": 1})
        assert first["node"] == "a"
        waiting_w2 = asyncio.ensure_future(broker.acquire("w2", {"a": 1}, timeout=5))
        waiting_w1 = asyncio.ensure_future(broker.acquire("w1", {"a": 1}, timeout=5))
        await asyncio.sleep(0)
        assert not waiting_w2.done() and not waiting_w1.done()  # cap 1 is taken
        broker.release("w1", [{"lease": first["lease"], "texts": 10, "seconds": 1.0}])
        second = await waiting_w2  # the older request gets the freed slot
        assert second["node"] == "a" and not waiting_w1.done()
        broker.release("w2", [{"lease": second["lease"]}])
        assert (await waiting_w1)["node"] == "a"
        assert broker.state()["a"]["max_inflight_seen"] == 1
    run(scenario())



def test_the_oldest_jobs_requests_are_served_first():
    # Partitions then finish one after another instead of all together.
    async def scenario():
        broker = await started_broker()
        held = await broker.acquire("w1", {"a": 1}, priority=5.0)
        newer = asyncio.ensure_future(broker.acquire("w1", {"a": 1}, timeout=5, priority=9.0))
        await asyncio.sleep(0)
        older = asyncio.ensure_future(broker.acquire("w2", {"a": 1}, timeout=5, priority=5.0))
        await asyncio.sleep(0)
        broker.release("w1", [{"lease": held["lease"]}])
        granted = await older  # arrived later, but its job started first
        assert granted["node"] == "a" and not newer.done()
        broker.release("w2", [{"lease": granted["lease"]}])
        assert (await newer)["node"] == "a"
    run(scenario())


def test_spare_requests_for_hedge_copies_come_last_and_contend_with_nobody():
    async def scenario():
        broker = await started_broker()
        held = await broker.acquire("w1", {"a": 1}, priority=1.0)
        spare = asyncio.ensure_future(
            broker.acquire("w1", {"a": 1}, timeout=5, priority=1.0, spare=True))
        await asyncio.sleep(0)
        work = asyncio.ensure_future(broker.acquire("w2", {"a": 1}, timeout=5, priority=9.0))
        await asyncio.sleep(0)
        broker.release("w1", [{"lease": held["lease"]}])
        granted = await work  # new work first, even from a younger job
        assert granted["contended"] is False  # a waiting spare request is not contention
        assert not spare.done()
        broker.release("w2", [{"lease": granted["lease"]}])
        assert (await spare)["node"] == "a"
    run(scenario())

def test_configurations_sharing_the_broker_get_only_their_own_nodes():
    async def scenario():
        broker = await started_broker()
        assert (await broker.acquire("w1", {"a": 2}))["node"] == "a"
        assert (await broker.acquire("w1", {"b": 2}))["node"] == "b"
        for _ in range(3):
            assert (await broker.acquire("w1", {"b": 2}, timeout=0.05) or {}).get("node") != "a"
    run(scenario())


def test_unusable_nodes_and_timeout():
    async def scenario():
        broker = await started_broker()
        assert (await broker.acquire("w1", {"a": 1, "b": 1}, unusable=["a"]))["node"] == "b"
        assert await broker.acquire("w1", {"a": 1, "b": 1}, unusable=["a"], timeout=0.05) is None
        assert not broker.waiters  # a timed-out request leaves no waiter behind
    run(scenario())


def test_leases_of_a_worker_that_leaves_are_taken_back():
    async def scenario():
        broker = await started_broker()
        await broker.acquire("w1", {"a": 1})
        waiting = asyncio.ensure_future(broker.acquire("w2", {"a": 1}, timeout=5))
        await asyncio.sleep(0)
        broker.remove_worker(None, "w1", stimulus_id="test")
        assert (await waiting)["node"] == "a"
        assert {lease.owner for lease in broker.leases} == {"w2"}
    run(scenario())



def test_a_request_left_waiting_by_a_dead_worker_gets_no_lease():
    # Its handler outlives the dead connection; a lease granted to it would never come back.
    async def scenario():
        broker = await started_broker()
        first = await broker.acquire("w1", {"a": 1})
        orphan = asyncio.ensure_future(broker.acquire("w2", {"a": 1}, timeout=5))
        await asyncio.sleep(0)
        broker.remove_worker(None, "w2", stimulus_id="test")
        broker.release("w1", [{"lease": first["lease"]}])
        assert await orphan is None
        assert broker.state()["a"]["inflight"] == 0  # the slot stays free for the living
        broker.add_worker(None, "w2")  # restarted on the same address: served again
        assert (await broker.acquire("w2", {"a": 1}))["node"] == "a"
    run(scenario())

def test_grants_say_whether_other_requests_still_wait():
    async def scenario():
        broker = await started_broker()
        alone = await broker.acquire("w1", {"a": 1, "b": 1})
        assert alone["contended"] is False
        await broker.acquire("w1", {"a": 1, "b": 1})  # both slots taken now
        first = asyncio.ensure_future(broker.acquire("w1", {"a": 1, "b": 1}, timeout=5))
        second = asyncio.ensure_future(broker.acquire("w2", {"a": 1, "b": 1}, timeout=5))
        await asyncio.sleep(0)
        broker.release("w1", [{"lease": alone["lease"]}])
        assert (await first)["contended"] is True  # w2 is still waiting
        assert not second.done()
        second.cancel()
    run(scenario())


def test_bulk_requests_get_every_free_slot_up_to_the_ids_they_bring():
    async def scenario():
        broker = await started_broker()
        nodes = {"a": 2, "b": 1, "c": 1}
        answer = await broker.acquire("w1", nodes, leases=["w1-0", "w1-1", "w1-2"])
        assert [g["lease"] for g in answer["grants"]] == ["w1-0", "w1-1", "w1-2"]
        assert sorted(g["node"] for g in answer["grants"]) in (["a", "a", "b"], ["a", "a", "c"],
                                                               ["a", "b", "c"])
        rest = await broker.acquire("w1", nodes, leases=["w1-3", "w1-4"])
        assert len(rest["grants"]) == 1  # one slot was left: caps hold
        assert {n: s["inflight"] for n, s in broker.state().items()} == nodes
        assert await broker.acquire("w2", nodes, leases=["w2-0"], timeout=0.05) is None
        broker.release("w1", [{"lease": "w1-0"}, {"lease": "w1-1"}])  # two returned in one
        again = await broker.acquire("w2", nodes, leases=["w2-0", "w2-1", "w2-2"])
        assert len(again["grants"]) == 2
    run(scenario())


def test_a_repeated_request_gets_the_same_leases_not_more_slots():
    async def scenario():
        broker = await started_broker()
        first = await broker.acquire("w1", {"a": 2}, leases=["w1-0"])
        repeat = await broker.acquire("w1", {"a": 2}, leases=["w1-0"])  # delivered twice
        assert repeat["grants"] == first["grants"]
        assert broker.state()["a"]["inflight"] == 1
        broker.release("w1", [{"lease": "w1-0"}])
        broker.release("w1", [{"lease": "w1-0"}])  # a retried return frees the slot once
        assert broker.state()["a"]["inflight"] == 0
    run(scenario())


def test_a_lease_neither_returned_nor_renewed_expires_and_its_slot_is_served_again():
    from tests.conftest import FakeClock

    async def scenario():
        clock = FakeClock()
        broker = SlotBroker(clock=clock)
        await broker.start(types.SimpleNamespace(handlers={}))
        lost = await broker.acquire("w1", {"a": 1, "b": 1}, leases=["w1-0"])
        kept = await broker.acquire("w1", {"a": 1, "b": 1}, leases=["w1-1"])
        clock.advance(20)
        assert broker.renew("w1", ["w1-1"]) == 1  # w1-0's return was lost on the way
        clock.advance(15)
        again = await broker.acquire("w2", {"a": 1, "b": 1}, leases=["w2-0"])
        assert again["grants"][0]["node"] == lost["grants"][0]["node"]
        assert broker.load()["expired"] == 1
        assert broker.state()[kept["grants"][0]["node"]]["inflight"] == 1  # renewed: held
    run(scenario())


def test_a_worker_leases_for_its_waiting_batches_in_one_request_and_returns_them_together():
    from sollol_dask._outcome import Outcome
    from sollol_dask.cluster._broker import BrokerSlots
    from sollol_dask.policy._balancer import SlotBalancer

    async def scenario():
        broker = await started_broker()
        calls: list[str] = []

        async def call(handler, **kw):
            calls.append(handler)
            result = getattr(broker, handler.removeprefix("sollol_slots_"))(**kw)
            return await result if asyncio.iscoroutine(result) else result

        balancer = SlotBalancer(["a", "b", "c"], [2, 2, 2], clock=lambda: 0.0)
        slots = BrokerSlots(balancer, call, "w1")
        grants = await asyncio.gather(*(slots.acquire(frozenset()) for _ in range(6)))
        assert sorted(g.node for g in grants) == ["a", "a", "b", "b", "c", "c"]
        assert calls == ["sollol_slots_acquire"]  # six leases, one request
        for grant in grants:
            slots.release(grant, Outcome(texts=8, seconds=0.5))
        await slots.aclose()
        assert calls == ["sollol_slots_acquire", "sollol_slots_release"]  # six in one
        assert {n: s["inflight"] for n, s in broker.state().items()} == {"a": 0, "b": 0, "c": 0}
    run(scenario())


def test_a_worker_sizes_its_first_batch_on_a_node_from_the_brokers_measurement():
    # Worker 1 measured node "a" (0.5 s a text); worker 2 never sent to it: its first
    # batch there is sized from the broker's measurement (2 texts for batch_seconds=1,
    # raised to the smallest batch, 8), not the blind first batch of 16.
    from sollol_dask._outcome import Outcome
    from sollol_dask.cluster._broker import BrokerSlots
    from sollol_dask.policy._balancer import SlotBalancer

    async def scenario():
        broker = await started_broker()

        async def call(handler, **kw):
            result = getattr(broker, handler.removeprefix("sollol_slots_"))(**kw)
            return await result if asyncio.iscoroutine(result) else result

        def worker(name):
            balancer = SlotBalancer(["a"], [1], clock=lambda: 0.0)
            return balancer, BrokerSlots(balancer, call, name)

        b1, w1 = worker("w1")
        b2, w2 = worker("w2")
        assert b2.batch_size_for("a", 512, 1.0) == 16  # never measured anywhere
        w1.release(await w1.acquire(frozenset()), Outcome(texts=8, seconds=4.0))
        await w1.aclose()
        assert b1.nodes["a"].seconds_per_text == 0.5
        grant = await w2.acquire(frozenset())
        assert grant.node == "a" and b2.nodes["a"].seconds_per_text == 0.5
        assert b2.batch_size_for("a", 512, 1.0) == 8
        w2.release(grant, Outcome(texts=8, seconds=2.0))  # its own measurement from now on
        assert b2.nodes["a"].seconds_per_text == 0.5 * 0.7 + 0.25 * 0.3
        await w2.aclose()
    run(scenario())


def test_a_worker_sends_its_nodes_only_when_they_changed_or_the_broker_lost_them():
    from sollol_dask._outcome import Outcome
    from sollol_dask.cluster._broker import BrokerSlots
    from sollol_dask.policy._balancer import SlotBalancer

    async def scenario():
        broker = await started_broker()
        sent: list = []

        async def call(handler, **kw):
            if handler == "sollol_slots_acquire":
                sent.append(kw["nodes"])
            result = getattr(broker, handler.removeprefix("sollol_slots_"))(**kw)
            return await result if asyncio.iscoroutine(result) else result

        balancer = SlotBalancer(["a", "b"], [1, 1], clock=lambda: 0.0)
        slots = BrokerSlots(balancer, call, "w1")

        async def one_lease():
            grant = await slots.acquire(frozenset())
            slots.release(grant, Outcome(texts=8, seconds=0.5))
            return grant.node

        await one_lease()
        await one_lease()
        assert sent == [{"a": 1, "b": 1}, None]  # the second request: "as before"
        balancer.add_node("c", 2)
        await one_lease()
        assert sent[-1] == {"a": 1, "b": 1, "c": 2}
        broker.remove_worker(None, "w1")  # the broker forgets it (as a restarted one would)
        broker.gone.discard("w1")
        assert await one_lease() in ("a", "b", "c")
        assert sent[-2:] == [None, {"a": 1, "b": 1, "c": 2}]  # told, it sent them again
        await slots.aclose()
    run(scenario())


def test_grants_say_how_many_slots_of_the_fleet_nobody_holds():
    async def scenario():
        broker = await started_broker()
        nodes = {"a": 2, "b": 1}
        first = await broker.acquire("w1", nodes, leases=["w1-0"])
        assert first["free"] == 2
        second = await broker.acquire("w2", nodes, leases=["w2-0", "w2-1"])
        assert second["free"] == 0
        broker.release("w1", [{"lease": "w1-0", "texts": 8, "seconds": 1.0}])
        third = await broker.acquire("w1", nodes, leases=["w1-1"])
        assert len(third["grants"]) == 1 and third["free"] == 0
    run(scenario())
