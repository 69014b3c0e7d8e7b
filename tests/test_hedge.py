"""The hedge choice, pure: which in-flight batch a free fast node should copy, and when."""

from __future__ import annotations

import dataclasses

from sollol_dask.policy._hedge import RECHECK_HEDGE, hedge_target


@dataclasses.dataclass(eq=False)
class FakeBatch:
    size: int
    running: dict
    done: bool = False
    hedged: bool = False


SPEED = {"fast": 0.01, "slow": 0.1}  # seconds per text


def expected(node, texts):
    return None if SPEED.get(node) is None else SPEED[node] * texts


def test_a_batch_on_a_slow_node_is_copied_when_the_copy_would_win_clearly():
    batch = FakeBatch(100, {"slow": (None, 0.0)})  # slow needs 10 s, fast 1 s
    assert hedge_target([batch], "fast", now=1.0, expected_seconds=expected) == (batch, None)
    assert hedge_target([batch], "fast", now=8.0, expected_seconds=expected) == (batch, None)


def test_nothing_worth_copying_near_its_end_and_nothing_twice():
    nearly = FakeBatch(100, {"slow": (None, 0.0)})
    assert hedge_target([nearly], "fast", now=9.5, expected_seconds=expected) == (None, None)
    hedged = FakeBatch(100, {"slow": (None, 0.0)}, hedged=True)
    done = FakeBatch(100, {"slow": (None, 0.0)}, done=True)
    assert hedge_target([hedged, done], "fast", 1.0, expected) == (None, None)


def test_an_unmeasured_holder_qualifies_once_it_ran_1_5x_the_fast_time():
    batch = FakeBatch(100, {"new": (None, 10.0)})  # "new" not measured yet
    target, later = hedge_target([batch], "fast", now=10.5, expected_seconds=expected)
    assert target is None and abs(later - 1.0) < 1e-9  # 1.5 s after it was sent
    assert hedge_target([batch], "fast", now=11.6, expected_seconds=expected) == (batch, None)


def test_an_unmeasured_fast_node_looks_again_later():
    batch = FakeBatch(100, {"slow": (None, 0.0)})
    assert hedge_target([batch], "other", 1.0, expected) == (None, RECHECK_HEDGE)


def test_at_most_8_lanes_of_a_job_look_for_copies():
    from sollol_dask.policy._hedge import may_look_for_copies
    assert [may_look_for_copies(n) for n in (0, 7, 8, 500)] == [True, True, False, False]
