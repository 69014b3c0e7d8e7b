"""Errors keep their outcome (failure kind, hard, limits, row) when pickled across processes."""

import pickle

from sollol_dask import (BadResponseError, Failure, InputError, ModelNotFoundError, NodeError,
                         NoNodeAvailableError)


def roundtrip(err):
    return pickle.loads(pickle.dumps(err))


def test_node_error_keeps_its_outcome_when_pickled():
    err = NodeError("n said 413", node="http://n:1", status=413, retryable=True,
                    failure=Failure.TOO_BIG, hard=False, retry_after=None, max_inputs=32)
    again = roundtrip(err)
    assert type(again) is NodeError and str(again) == str(err)
    assert (again.node, again.status, again.retryable, again.failure, again.hard,
            again.max_inputs) == ("http://n:1", 413, True, Failure.TOO_BIG, False, 32)
    busy = roundtrip(NodeError("busy", node="n", failure=Failure.BUSY, retry_after=3.0))
    assert (busy.failure, busy.retry_after) == (Failure.BUSY, 3.0)


def test_defaults_and_subclasses():
    assert NodeError("x", node="n").failure is Failure.TRANSIENT
    missing = roundtrip(ModelNotFoundError("no model", node="n"))
    assert (missing.failure, missing.retryable, missing.status) == (Failure.NODE_FATAL, False, 404)
    bad = roundtrip(BadResponseError("15 vectors", node="n", failure=Failure.NODE_FATAL, hard=True))
    assert (bad.node, bad.failure, bad.hard) == ("n", Failure.NODE_FATAL, True)
    assert BadResponseError("nan").failure is Failure.BAD_RESPONSE
    row = roundtrip(InputError("row 3", row=3, partition=1))
    assert (row.row, row.partition) == (3, 1)
    none = roundtrip(NoNodeAvailableError("none", {"n": "down"}))
    assert none.reasons == {"n": "down"}
