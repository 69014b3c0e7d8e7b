"""The engine's job running, socket-free: retries and back-off, 413 splitting, too-long
bisection, the job's priority. Fake clock, injected sleep: no test waits."""

from __future__ import annotations

import numpy as np
import pytest

from sollol_dask import InputError, NodeError
from sollol_dask.policy._hedge import RECHECK_HEDGE
from sollol_dask.policy._retry import backoff_delay
from sollol_dask.testing.mock import FakeOllama, vector

from .engine_harness import Harness

A, B = "http://a:1", "http://b:1"
TEXTS = [f"text {i}" for i in range(40)]
EXPECTED = np.stack([vector(t, 4) for t in TEXTS])


def backoff_sleeps(h: Harness) -> list[float]:
    """The router's waits before a retry (idle lanes also wait, to look for a hedge)."""
    return [s for s in h.sleeps if s != RECHECK_HEDGE]


def test_a_failed_batch_is_retried_on_another_node_after_a_back_off(clock):
    failures = []

    def flaky(request):
        if request.path == "/api/embed" and request.json()["input"] and not failures:
            failures.append(request)
            return 500, b'{"error": "runner crashed"}'
        return None

    h = Harness({A: FakeOllama(fail=flaky), B: FakeOllama()}, clock, batch_size=64)
    vectors = h.run(lambda r: r.aembed(TEXTS))
    assert np.array_equal(vectors, EXPECTED)
    assert backoff_sleeps(h) == [backoff_delay(1)]
    assert h.state(A).errors["transient"] == 1 and h.state(A).health.value == "up"
    retried = [r for r in h.transport.embeds() if r.json()["input"] == failures[0].json()["input"]]
    assert [r.node for r in retried] == [A, B]  # the same rows, sent elsewhere


def test_a_batch_failing_everywhere_ends_the_call_after_max_attempts(clock):
    def down(request):
        if request.path == "/api/embed" and request.json()["input"]:
            return 500, b'{"error": "runner crashed"}'
        return None

    h = Harness({A: FakeOllama(fail=down)}, clock, max_attempts=3, eject_after=100)
    with pytest.raises(NodeError, match=r"failed on 3 attempts \(nodes tried: http://a:1\)"):
        h.run(lambda r: r.aembed(["x"]))
    assert backoff_sleeps(h) == [backoff_delay(1), backoff_delay(2)]


def test_a_413_splits_the_batch_and_teaches_the_node_its_limit(clock):
    h = Harness({A: FakeOllama(max_inputs=5)}, clock, batch_size=64)
    vectors = h.run(lambda r: r.aembed(TEXTS[:16]))
    assert np.array_equal(vectors, EXPECTED[:16])
    sizes = [len(r.json()["input"]) for r in h.transport.embeds()]
    assert sizes[0] == 16 and max(sizes[1:]) <= 8  # refused whole, then in halves or less
    assert h.state(A).max_batch is not None and h.state(A).max_batch <= 8
    assert h.state(A).health.value == "up" and backoff_sleeps(h) == []  # not held against it


def test_a_text_too_long_is_found_by_bisection_and_named(clock):
    texts = [f"t{i}" for i in range(16)]
    texts[11] = "x" * 100
    h = Harness({A: FakeOllama(context=50)}, clock, batch_size=64)
    with pytest.raises(InputError, match="row 11 is longer than the model's context") as info:
        h.run(lambda r: r.aembed(texts))
    assert info.value.row == 11
    sent = [r.json()["input"] for r in h.transport.embeds()]
    holding = [len(s) for s in sent if "x" * 100 in s]
    assert holding == [16, 8, 4, 2, 1]  # bisected down to the row, no more


def test_the_job_priority_is_the_injected_wall_clock(clock):
    seen = []
    h = Harness({A: FakeOllama()}, clock)
    original = h.router.slots.acquire

    async def acquire(avoid, priority=0.0, spare=False):
        seen.append(priority)
        return await original(avoid, priority, spare)

    h.router.slots.acquire = acquire
    clock.advance(5.0)
    h.run(lambda r: r.aembed(["a", "b"]))
    assert seen and set(seen) == {1005.0}


def test_identical_texts_are_sent_once_and_rows_keep_their_order(clock):
    h = Harness({A: FakeOllama()}, clock)
    vectors = h.run(lambda r: r.aembed(["b", "a", "b"]))
    assert np.array_equal(vectors, np.stack([vector(t, 4) for t in ("b", "a", "b")]))
    assert sorted(t for r in h.transport.embeds() for t in r.json()["input"]) == ["a", "b"]


@pytest.mark.parametrize("pending, sizes", [(0, [6, 3, 3]), (1000, [10, 2])])
def test_a_jobs_end_is_cut_short_for_the_tail_only_when_no_rows_of_the_run_wait(
        clock, pending, sizes):
    # A node measured at 0.1 s a text gets batches of 10 (batch_seconds=1), 2 slots.
    # 12 texts left for 2 slots: each batch takes an equal share of what is left (6, then
    # 3 and 3), so the slots finish together; unless rows of the same run that no
    # worker has started follow: then full batches (10, and the 2 left).
    h = Harness({A: FakeOllama()}, clock, batch_size=64)

    async def run(router):
        await router.fleet.ready()
        h.state(A).seconds_per_text = 0.1
        return await router.jobs.arun(TEXTS[:12], pending=pending)

    result = h.run(run)
    assert np.array_equal(result.matrix, EXPECTED[:12])
    assert sorted((len(r.json()["input"]) for r in h.transport.embeds()
                   if r.json()["input"]), reverse=True) == sizes
