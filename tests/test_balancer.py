"""The routing policy, driven by a fake clock: exact decisions, no network, no sleeps."""

from sollol_dask import Failure
from sollol_dask.policy._balancer import Health, SlotBalancer
from sollol_dask.policy._retry import backoff_delay


def make(clock, caps=(2, 2), **kw) -> SlotBalancer:
    return SlotBalancer([f"n{i}" for i in range(len(caps))], list(caps), clock=clock, **kw)


def test_caps_are_never_exceeded(clock):
    bal = make(clock, caps=(2, 1))
    taken = [bal.choose() for _ in range(5)]
    assert sorted(t for t in taken if t) == ["n0", "n0", "n1"]
    assert taken[3:] == [None, None]
    assert bal.nodes["n0"].inflight == 2 and bal.nodes["n1"].inflight == 1


def test_work_conserving_a_freed_slot_is_used_at_once(clock):
    bal = make(clock, caps=(1, 1))
    assert {bal.choose(), bal.choose()} == {"n0", "n1"}
    assert bal.choose() is None
    bal.release("n1", texts=10, seconds=1.0)
    assert bal.choose() == "n1"


def test_faster_node_is_preferred_once_measured(clock):
    bal = make(clock, caps=(1, 1))
    assert {bal.choose(), bal.choose()} == {"n0", "n1"}
    bal.release("n0", texts=10, seconds=10.0)  # 1 text/s
    bal.release("n1", texts=10, seconds=1.0)  # 10 texts/s
    assert bal.choose() == "n1"
    assert bal.choose() == "n0"  # the slow node still gets work when the fast one is full


def test_unmeasured_node_is_tried_before_measured_ones(clock):
    bal = SlotBalancer(["a", "b"], [1, 1], clock=clock)
    assert bal.choose() == "a"
    bal.release("a", texts=10, seconds=0.1)
    assert bal.choose() == "b"


def test_exclude_avoids_failed_node_unless_it_is_the_only_one_up(clock):
    bal = make(clock, caps=(2, 2))
    assert bal.choose(avoid={"n0"}) == "n1"
    bal.exclude("n1", "wrong digest")
    assert bal.choose(avoid={"n0"}) == "n0"


def test_hard_failure_ejects_at_once_and_backoff_doubles(clock):
    bal = make(clock, caps=(2, 2), backoff=1.0, max_backoff=30.0)
    bal.choose()
    bal.release("n0", failure=Failure.TRANSIENT, hard=True)
    assert bal.nodes["n0"].health is Health.EJECTED
    assert bal.due_probes() == []
    clock.advance(0.99)
    assert bal.due_probes() == []
    clock.advance(0.02)
    assert bal.due_probes() == ["n0"]
    assert bal.nodes["n0"].health is Health.PROBING
    bal.probe_result("n0", False)
    clock.advance(1.9)
    assert bal.due_probes() == []
    clock.advance(0.2)  # second ejection waits 2 s
    assert bal.due_probes() == ["n0"]
    bal.probe_result("n0", True)
    assert bal.nodes["n0"].health is Health.UP and bal.choose() in {"n0", "n1"}


def test_soft_failures_eject_after_threshold_and_success_resets(clock):
    bal = make(clock, caps=(5, 5), eject_after=3)
    for _ in range(2):
        bal.choose(avoid={"n1"})
        bal.release("n0", failure=Failure.TRANSIENT)
    bal.choose(avoid={"n1"})
    bal.release("n0", texts=1, seconds=0.1)
    assert bal.nodes["n0"].consecutive_failures == 0
    for _ in range(3):
        bal.choose(avoid={"n1"})
        bal.release("n0", failure=Failure.TRANSIENT)
    assert bal.nodes["n0"].health is Health.EJECTED
    assert bal.nodes["n0"].errors["transient"] == 5


def test_ejected_and_excluded_nodes_get_no_work(clock):
    bal = make(clock, caps=(2, 2))
    bal.eject("n0", "down")
    bal.exclude("n1", "other model")
    assert bal.choose() is None
    assert bal.has_usable_node() and not bal.any_up()
    bal.exclude("n0", "gone")
    assert not bal.has_usable_node()


def test_backoff_is_capped(clock):
    bal = make(clock, caps=(1,), backoff=1.0, max_backoff=4.0)
    for _ in range(5):
        bal.eject("n0", "x")
    assert bal.nodes["n0"].retry_at - clock() == 4.0
    assert [backoff_delay(a) for a in (1, 2, 3)] == [0.05, 0.1, 0.2]
    assert backoff_delay(20) == 2.0


def test_timeout_generous_until_measured_then_scaled(clock):
    bal = make(clock, caps=(2,), min_timeout=5.0, timeout_factor=10.0, first_timeout=60.0)
    assert bal.timeout_for("n0", 64) == 60.0
    bal.choose()
    bal.release("n0", texts=64, seconds=6.4)  # 0.1 s per text
    assert bal.timeout_for("n0", 64) == 64.0
    assert bal.timeout_for("n0", 1) == 5.0


def test_a_restored_node_keeps_its_speed_and_tight_timeouts(clock):
    bal = make(clock, caps=(1,), first_timeout=120.0)
    bal.choose()
    bal.release("n0", texts=10, seconds=1.0)
    assert bal.nodes["n0"].speed == 10.0
    bal.eject("n0", "x")
    bal.probe_result("n0", True)
    assert bal.nodes["n0"].speed == 10.0
    assert bal.timeout_for("n0", 10) == 10.0  # not the 120 s first-request allowance


def test_excluded_node_is_never_restored(clock):
    bal = make(clock, caps=(1,))
    bal.exclude("n0", "dimension 384, fleet uses 768")
    bal.probe_result("n0", True)
    assert bal.nodes["n0"].health is Health.EXCLUDED


def test_unusable_nodes_are_never_chosen_even_as_last_resort(clock):
    bal = make(clock, caps=(2, 2))
    assert bal.choose(avoid={"n1"}, unusable={"n0"}) == "n1"
    assert bal.choose(unusable={"n0", "n1"}) is None
    assert bal.has_free_slot() and not bal.has_free_slot(unusable={"n0", "n1"})


def test_cancelled_release_frees_the_slot_without_a_verdict(clock):
    bal = make(clock, caps=(1,))
    bal.choose()
    bal.release("n0", failure=Failure.CANCELLED)
    s = bal.nodes["n0"]
    assert (s.inflight, s.requests, s.consecutive_failures, dict(s.errors)) == (0, 0, 0, {})


def test_batch_size_follows_measured_speed(clock):
    bal = make(clock, caps=(2, 2))
    assert bal.batch_size_for("n0", largest=64, target_seconds=2.0) == 16  # unmeasured
    assert bal.batch_size_for("n0", largest=4, target_seconds=2.0) == 4
    bal.choose(), bal.choose()
    bal.release("n0", texts=64, seconds=0.64)  # 10 ms per text
    bal.release("n1", texts=64, seconds=64.0)  # 1 s per text
    assert bal.batch_size_for("n0", largest=64, target_seconds=2.0) == 64
    assert bal.batch_size_for("n0", largest=512, target_seconds=2.0) == 200
    assert bal.batch_size_for("n1", largest=64, target_seconds=2.0) == 8  # floor
    assert bal.expected_seconds("n1", 10) == 10.0 and bal.expected_seconds("n0", 0) == 0.0



def test_a_refused_batch_size_halves_that_nodes_batches_for_good(clock):
    bal = make(clock, caps=(2, 2))
    bal.choose(), bal.choose()
    bal.release("n0", texts=64, seconds=0.64)
    bal.limit_batch("n0", 64)  # e.g. TEI's 422 above 32 inputs
    assert bal.batch_size_for("n0", largest=512, target_seconds=2.0) == 32
    bal.limit_batch("n0", 32)
    assert bal.batch_size_for("n0", largest=512, target_seconds=2.0) == 16
    bal.limit_batch("n0", 64)  # a late refusal of an older, larger batch changes nothing
    assert bal.batch_size_for("n0", largest=512, target_seconds=2.0) == 16
    assert bal.batch_size_for("n1", largest=512, target_seconds=2.0) == 16  # unmeasured
    assert bal.batch_size_for("n0", largest=8, target_seconds=2.0) == 8
    bal.limit_batch("n1", 200, allowed=32)  # the server said its limit
    bal.choose(), bal.choose()
    bal.release("n1", texts=64, seconds=0.64)
    assert bal.batch_size_for("n1", largest=512, target_seconds=2.0) == 32

def test_nodes_can_be_added_while_running(clock):
    bal = SlotBalancer([], [], clock=clock)
    bal.add_node("a", 2)
    bal.add_node("a", 4)
    bal.add_node("b", 1)
    assert (bal.nodes["a"].cap, bal.nodes["b"].cap) == (4, 1)
    assert bal.choose() == "a"


def test_latency_histogram_and_quantiles(clock):
    from sollol_dask.policy._metrics import LatencySketch

    bal = make(clock, caps=(10,))
    for seconds in (0.04, 0.2, 0.2, 0.2, 3.0):
        bal.choose()
        bal.release("n0", texts=1, seconds=seconds)
    counts = bal.nodes["n0"].latency_counts
    assert counts == [1, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]  # Prometheus buckets
    latency = bal.nodes["n0"].latency
    assert abs(latency.quantile(0.5) - 0.2) <= 0.002 and latency.quantile(0.95) == 3.0
    assert LatencySketch().quantile(0.5) is None


def _readmissions_of_a_node_that_always_answers_wrongly(clock, bal, minutes: int) -> int:
    """Drive ``n0`` as the router does for ``minutes`` of fake time: it takes a batch
    whenever it is up, answers it wrongly, and is probed (successfully) when due."""
    readmitted = 0
    for _ in range(minutes * 600):  # 0.1 s steps, as the router's supervisor
        if bal.nodes["n0"].health is Health.UP and bal.choose(avoid={"n1"}) == "n0":
            bal.release("n0", failure=Failure.BAD_RESPONSE, reason="returned 15 vectors for 16 texts")
        for name in bal.due_probes():
            bal.probe_result(name, True)  # it describes itself fine every time
            readmitted += 1
        clock.advance(0.1)
    return readmitted


def test_a_node_that_keeps_answering_wrongly_is_quarantined_not_readmitted(clock):
    bal = make(clock, caps=(2, 2))
    # Before: ejected after 3 in a row, re-admitted after 1-2 s, forever (~300 times).
    assert _readmissions_of_a_node_that_always_answers_wrongly(clock, bal, 10) <= 3
    s = bal.nodes["n0"]
    assert s.health is Health.QUARANTINED
    assert s.reason.startswith("quarantined for 600 s: 4 bad answers in a row, last: "
                               "bad-response (returned 15 vectors for 16 texts)")
    assert bal.usable_slots() == 2  # n1's only: a quarantined node is not waited for


def test_bad_answers_eject_at_once_with_growing_waits_until_quarantine(clock):
    bal = make(clock, caps=(2, 2), quarantine_after=3, quarantine=300.0)
    waits = []
    for _ in range(3):
        assert bal.choose(avoid={"n1"}) == "n0"
        bal.release("n0", failure=Failure.BAD_RESPONSE)
        waits.append(bal.nodes["n0"].retry_at - clock())
        if bal.nodes["n0"].health is Health.EJECTED:
            clock.advance(waits[-1])
            assert bal.due_probes() == ["n0"]
            bal.probe_result("n0", True)
            assert bal.nodes["n0"].strikes > 0  # a probe does not clear a strike
    assert waits == [1.0, 2.0, 300.0]
    assert bal.nodes["n0"].health is Health.QUARANTINED
    clock.advance(300.0)
    assert bal.due_probes() == ["n0"]  # probed when the quarantine ends
    bal.probe_result("n0", True)
    bal.choose(avoid={"n1"})
    bal.release("n0", texts=16, seconds=0.1)  # a good batch clears the strikes
    assert (bal.nodes["n0"].strikes, bal.nodes["n0"].health) == (0, Health.UP)


def test_a_busy_node_gets_nothing_until_its_retry_after_and_is_not_ejected(clock):
    bal = make(clock, caps=(1, 1), eject_after=1)
    assert bal.choose(avoid={"n1"}) == "n0"
    bal.release("n0", failure=Failure.BUSY, retry_after=5.0)
    s = bal.nodes["n0"]
    assert s.health is Health.UP and s.consecutive_failures == 0 and s.errors["busy"] == 1
    assert bal.choose() == "n1" and bal.choose() is None
    assert bal.unusable() == ["n0"] and not bal.has_free_slot()
    clock.advance(4.99)
    assert not bal.end_pauses() and bal.choose() is None
    clock.advance(0.02)
    assert bal.end_pauses() and bal.choose() == "n0"


def test_first_timeout_shrinks_when_an_unmeasured_node_never_answers(clock):
    bal = make(clock, caps=(1, 1), min_timeout=5.0, first_timeout=120.0)
    seen = []
    for _ in range(5):
        seen.append(bal.timeout_for("n0", 16))
        bal.choose(avoid={"n1"})
        bal.release("n0", failure=Failure.TIMEOUT, hard=True)
        bal.probe_result("n0", True)
    assert seen == [120.0, 30.0, 7.5, 5.0, 5.0]
    assert bal.timeout_for("n1", 16) == 120.0  # per node


def test_choose_many_takes_slots_as_repeated_choices_would(clock):
    from sollol_dask.policy._balancer import SlotBalancer

    b = SlotBalancer(["a", "b", "c"], [2, 1, 1], clock=clock)
    assert b.choose_many(0) == []
    taken = b.choose_many(3, unusable=["c"])
    assert sorted(taken) == ["a", "a", "b"]  # caps hold; "c" is never chosen
    assert b.choose_many(5, unusable=["c"]) == []
    assert b.choose_many(5) == ["c"]


def test_usable_slots_follows_every_change_of_the_fleet(clock):
    # Asked for every batch, so it is kept between changes: each change must show at once.
    bal = make(clock, caps=(2, 2, 1), quarantine=300.0)
    assert bal.usable_slots() == 5
    bal.exclude("n2", "wrong model")
    assert bal.usable_slots() == 4
    bal.quarantine("n1", "bad answers")
    assert bal.usable_slots() == 2
    bal.eject("n0", "refused")  # ejected nodes may come back soon: still counted
    assert bal.usable_slots() == 2
    clock.advance(300.0)
    assert sorted(bal.due_probes()) == ["n0", "n1"]  # n1 out of quarantine, being probed
    assert bal.usable_slots() == 4
    bal.set_cap("n0", 3)
    assert bal.usable_slots() == 5
    bal.add_node("n3", 4)
    assert bal.usable_slots() == 9
    bal.add_node("n3", 6)  # a known node: the larger cap
    assert bal.usable_slots() == 11


def _scan_choice(bal, avoid, unusable, now):
    """The choice by a full scan of the nodes (what the free heap must agree with)."""
    up = [s for s in bal.nodes.values()
          if s.health is Health.UP and s.name not in unusable and s.resume_at <= now]
    if up and all(s.name in avoid for s in up):
        avoid = set()
    free = [s for s in up if s.inflight < s.cap and s.name not in avoid]
    return max(free, key=bal._rank).name if free else None


def test_the_free_heap_chooses_as_a_full_scan_would_through_every_kind_of_change(clock):
    # Slots taken and given back, speeds measured, pauses (Retry-After), ejections,
    # quarantines, probes, exclusions, caps changed, nodes joining: after each change
    # the heap's choice is the scan's.
    import random
    rng = random.Random(17)
    bal = make(clock, caps=(2, 1, 3, 1, 2, 1, 1, 2), quarantine_after=2, quarantine=5.0)
    held: list[str] = []
    checked = 0
    for step in range(4000):
        names = list(bal.nodes)
        op = rng.random()
        if op < 0.45:
            avoid = set(rng.sample(names, rng.choice((0, 0, 1, 2, 7))))
            unusable = set(rng.sample(names, rng.choice((0, 0, 0, 1, 3))))
            expected = _scan_choice(bal, avoid, unusable, clock())
            assert bal.has_free_slot(unusable) == any(
                s.free and s.resume_at <= clock() and s.name not in unusable
                for s in bal.nodes.values())
            got = bal.choose(avoid, unusable)
            assert got == expected, step
            checked += got is not None
            if got:
                held.append(got)
        elif op < 0.8 and held:
            name = held.pop(rng.randrange(len(held)))
            kind = rng.random()
            if kind < 0.7:
                bal.release(name, texts=rng.randint(1, 20), seconds=rng.uniform(0.05, 3.0))
            elif kind < 0.8:
                bal.release(name, failure=Failure.BUSY, retry_after=rng.uniform(0.1, 2.0))
            elif kind < 0.9:
                bal.release(name, failure=Failure.TIMEOUT, hard=True)
            elif kind < 0.95:
                bal.release(name, failure=Failure.BAD_RESPONSE, reason="zeros")
            else:
                bal.release(name, failure=Failure.CANCELLED)
        elif op < 0.9:
            clock.advance(rng.uniform(0.0, 1.5))
            bal.end_pauses()
            for name in bal.due_probes() + [n for n, s in bal.nodes.items()
                                            if s.health is Health.PROBING]:
                bal.probe_result(name, rng.random() < 0.8)
        elif op < 0.94:
            bal.set_cap(rng.choice(names), rng.randint(1, 3))
        elif op < 0.96 and len(names) < 14:
            bal.add_node(f"j{len(names)}", rng.randint(1, 2))
        elif op < 0.962:
            bal.exclude(rng.choice(names), "wrong model")
        else:
            bal.checking(rng.choice(names))
    assert checked > 500  # many of the choices compared were real grants


def test_held_counts_the_slots_taken_here_and_not_given_back(clock):
    bal = make(clock, caps=(2, 1))
    taken = [bal.choose(), bal.choose()]
    bal.note_acquired("n1")  # a slot the broker granted
    assert bal.held == 3
    bal.release(taken[0], texts=4, seconds=1.0)
    bal.release(taken[1], failure=Failure.CANCELLED)
    assert bal.held == 1
    bal.release("n1", texts=4, seconds=1.0)
    bal.release("n1", texts=4, seconds=1.0)  # one too many: never below zero
    assert bal.held == 0 and bal.nodes["n1"].inflight == 0
