"""Latency quantiles as the dashboard and ``status`` show them: real values, not bucket
edges, merged across workers, bounded in size, and unchanged by the trip to the scheduler."""

import msgpack

from sollol_dask.policy._metrics import LatencySketch


def sketch_of(values):
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    return sketch


def test_quantiles_are_the_latencies_seen_within_one_percent():
    sketch = sketch_of([0.31] * 10 + [0.42] * 8 + [2.6] * 2)
    assert abs(sketch.quantile(0.5) - 0.31) <= 0.0031  # the 10th fastest of 20
    assert sketch.quantile(0.95) == 2.6  # the 19th: the slowest bin, exact by its max
    assert sketch_of([0.2] * 7).quantile(0.5) == 0.2  # one value reads back exactly
    values = [0.05 * 1.07 ** i for i in range(100)]  # 50 ms .. 40 s, sorted
    for q, rank in ((0.1, 10), (0.5, 50), (0.9, 90), (0.99, 99)):
        assert abs(sketch_of(values).quantile(q) / values[rank - 1] - 1) <= 0.01


def test_workers_sketches_merge_into_the_fleet_sketch():
    a, b = sketch_of([0.1] * 30), sketch_of([1.5] * 70)
    a.merge(b)
    assert a.count == 100 and a.min == 0.1 and a.max == 1.5
    assert a.quantile(0.25) == 0.1 and a.quantile(0.5) == 1.5
    a.merge(LatencySketch())  # a worker with no requests yet changes nothing
    assert (a.count, a.min, a.max) == (100, 0.1, 1.5)


def test_the_sketch_is_bounded_and_survives_msgpack():
    wide = sketch_of([0.001 * 1.03 ** i for i in range(1000)])  # 1 ms .. 7,000 s
    assert len(wide.bins) == LatencySketch.MAX_BINS
    assert abs(wide.quantile(0.95) / (0.001 * 1.03 ** 949) - 1) <= 0.01  # slow end intact
    wire = msgpack.unpackb(msgpack.packb(wide.to_wire()))  # as a worker's event travels
    back = LatencySketch.from_wire(wire)
    assert back.count == 1000 and back.quantile(0.5) == wide.quantile(0.5)
