import numpy as np

from sollol_dask.policy._batching import dedupe, tail_size


def test_dedupe_keeps_first_seen_order_and_maps_back():
    texts = ["b", "a", "b", "c", "a"]
    unique, inverse = dedupe(texts)
    assert unique == ["b", "a", "c"]
    assert [unique[i] for i in inverse] == texts
    assert inverse.dtype == np.int64



def test_batches_shrink_to_an_equal_share_near_the_end_but_not_below_a_quarter():
    assert tail_size(64, remaining=10_000, slots=8) == 64  # plenty left: full batches
    assert tail_size(64, remaining=256, slots=8) == 32  # 8 slots share what is left
    assert tail_size(64, remaining=9, slots=8) == 16  # a quarter at least
    assert tail_size(8, remaining=9, slots=8) == 2
    assert tail_size(1, remaining=1, slots=8) == 1
    assert tail_size(64, remaining=100, slots=0) == 64


def test_batches_shrink_at_the_tail_only_when_nothing_waits_and_the_tail_matters():
    from sollol_dask.policy._batching import lane_count, next_batch_size

    assert next_batch_size(100, 2.0, False, 1.0, remaining=40, slots=4) == 25  # share it
    assert next_batch_size(100, 2.0, True, 1.0, remaining=40, slots=4) == 100  # others wait
    assert next_batch_size(100, 0.2, False, 1.0, remaining=40, slots=4) == 100  # short anyway
    assert next_batch_size(100, None, False, 1.0, remaining=40, slots=4) == 100  # unmeasured
    assert (lane_count(10, 16), lane_count(10, 1000), lane_count(0, 5), lane_count(999, 10**6),
            lane_count(5000, 10**6)) == (2, 10, 1, 999, 2048)


def test_left_to_send_counts_the_jobs_here_and_the_run_behind_them():
    from dataclasses import dataclass

    from sollol_dask.policy._batching import left_to_send

    @dataclass(eq=False)  # hashable by identity, as jobs are
    class Job:
        untaken: int
        pending: int | None

    alone = Job(untaken=30, pending=None)  # an embed() call: no run behind it
    assert left_to_send(alone, set()) == (30, False)
    first = Job(untaken=100, pending=5000)  # a run's early part: 5,000 rows not started
    last = Job(untaken=40, pending=0)  # one of its last parts
    assert left_to_send(first, [first, last]) == (5140, False)
    assert left_to_send(last, [first, last]) == (5140, False)  # rows wait behind `first`
    assert left_to_send(last, [last, alone]) == (70, True)  # the run's own end
    assert left_to_send(alone, [last, alone]) == (70, False)
