"""The broker's lease table: client-chosen ids, expiry unless renewed (fake clock)."""

from __future__ import annotations

from sollol_dask.policy._leases import LeaseTable


def test_a_lease_expires_unless_renewed(clock):
    table = LeaseTable(clock, ttl=30.0, check_every=1.0)
    table.grant("w1-0", "w1", "a")
    table.grant("w1-1", "w1", "b")
    clock.advance(20)
    assert table.renew("w1", ["w1-0"]) == 1  # w1-1's release was lost: not renewed
    clock.advance(15)
    assert [e.lease for e in table.expired()] == ["w1-1"]
    assert table.get("w1-0").node == "a"
    clock.advance(30)
    assert [e.lease for e in table.expired()] == ["w1-0"]  # a stuck worker renews nothing
    assert len(table) == 0


def test_expiry_is_checked_at_most_every_check_every_seconds(clock):
    table = LeaseTable(clock, ttl=1.0, check_every=5.0)
    assert table.expired() == []
    table.grant("x", "w1", "a")
    clock.advance(2)
    assert table.expired() == []  # checked 2 s ago: bounded cost per call
    clock.advance(3)
    assert [e.lease for e in table.expired()] == ["x"]


def test_returning_a_lease_twice_frees_it_once_and_only_its_owner_renews(clock):
    table = LeaseTable(clock)
    table.grant("x", "w1", "a")
    assert table.renew("w2", ["x"]) == 0
    assert table.release("x").node == "a"
    assert table.release("x") is None


def test_a_leaving_worker_gives_back_only_its_leases(clock):
    table = LeaseTable(clock)
    table.grant("x", "w1", "a")
    table.grant("y", "w2", "a")
    assert [e.lease for e in table.take_owner("w1")] == ["x"]
    assert [e.lease for e in table] == ["y"]
