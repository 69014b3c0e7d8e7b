"""Bounds on what a node can make us hold: pure helpers."""

from email.utils import formatdate

from sollol_dask.policy._limits import (MAX_RETRY_AFTER, clip, embed_limit, retry_after_seconds,
                                 some_names)


def test_clip_says_how_much_was_left_out():
    assert clip("short") == "short"
    assert clip("x" * 600, 10) == "xxxxxxxxxx... (590 more characters)"
    assert len(clip("y" * 4_000_000)) < 530


def test_some_names_lists_a_few():
    assert some_names([]) == "none"
    assert some_names(["b", "a"]) == "a, b"
    assert some_names(f"m{i:03d}" for i in range(30_000 // 100)) == \
        "m000, m001, m002, m003, m004 and 295 more"
    assert len(some_names(["z" * 10_000])) < 120  # a name is the node's to choose, too


def test_retry_after_as_seconds_or_date_within_bounds():
    now = 1_000_000.0
    assert retry_after_seconds("5", now) == 5.0
    assert retry_after_seconds(" 1.5 ", now) == 1.5
    assert retry_after_seconds("86400", now) == MAX_RETRY_AFTER
    assert retry_after_seconds("-3", now) == 0.0
    assert retry_after_seconds(formatdate(now + 10, usegmt=True), now) == 10.0
    assert retry_after_seconds(formatdate(now - 10, usegmt=True), now) == 0.0
    for junk in (None, "", "soon", "nan", "inf", "Wed, 99 Foo"):
        assert retry_after_seconds(junk, now) is None


def test_embedding_answers_are_bounded_by_batch_and_dimension():
    assert embed_limit(16, 768) == 16 * 768 * 48 + 1024 * 1024
    assert embed_limit(0, None) == 4096 * 48 + 1024 * 1024  # dimension not known yet
    assert embed_limit(512, 768, configured=10_000) == 10_000
