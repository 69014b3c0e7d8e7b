"""The scheduler's fleet view, with a fake clock: merging, rates, jobs, events."""

from sollol_dask.dashboard import FleetView
from sollol_dask.policy._metrics import LatencySketch


def node(name, texts, state="up", inflight=0, errors=None, cap=2):
    return {"node": name, "model": "m", "digest": "abc", "state": state, "reason": "",
            "cap": cap, "inflight": inflight, "requests": texts // 10, "texts": texts,
            "errors": errors or {}, "speed": 50.0, "latency_counts": [0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
            "latency_sum": 0.6, "latency_sketch": sketch_of(0.2, 0.2, 0.2),
            "size": None, "size_vram": None}


def sketch_of(*seconds):
    sketch = LatencySketch()
    for s in seconds:
        sketch.add(s)
    return sketch.to_wire()


def test_workers_are_merged_per_node_and_rates_decay_when_idle(clock):
    view = FleetView(clock=clock)
    view.update("w1", "c", [node("a", 100, inflight=1), node("b", 10)])
    view.update("w2", "c", [node("a", 50, inflight=1, state="ejected")])
    rows = {r["node"]: r for r in view.data()["nodes"]}
    assert rows["a"]["texts"] == 150 and rows["a"]["inflight"] == 2
    assert rows["a"]["state"] == "up (1 of 2 workers), ejected (1 of 2 workers)"
    assert rows["a"]["p50"] == 0.2
    clock.advance(2)
    view.update("w1", "c", [node("a", 300), node("b", 10)])
    assert view.data()["nodes"][0]["rate"] == 100.0  # 200 more texts in 2 s
    clock.advance(10)  # nothing reported: the rate falls to zero
    assert view.data()["nodes"][0]["rate"] == 0.0


def test_state_changes_errors_jobs_and_leaving_workers_are_recorded(clock):
    view = FleetView(clock=clock)
    view.update("w1", "c", [node("a", 10)])
    view.update("w1", "c", [node("a", 10, state="ejected", errors={"transient": 2})])
    view.job_started("j1", "out/", rows=100, parts=2)
    clock.advance(5)
    view.part_done("j1", 50)
    job = view.data()["jobs"][0]
    assert (job["done_rows"], job["rate"], job["eta"]) == (50, 10.0, 5.0)
    view.part_done("j1", 50)
    view.remove_worker("w1")
    texts = [e["text"] for e in view.data()["events"]]
    assert "a up -> ejected on w1" in texts[0]
    assert "a: 2 transient error(s) seen by w1" in texts[1]
    assert texts[-2:] == ["job out/ finished: 100 rows", "worker w1 left"]
    assert view.data()["nodes"][0]["inflight"] == 0 and view.data()["nodes"][0]["texts"] == 10


def test_throughput_series_covers_the_last_ten_minutes_whoever_reads_it(clock):
    view = FleetView(clock=clock)
    for second in range(700):  # the monitor ticks every second; workers report as they go
        view.update("w1", "c", [node("a", 40 * second)])
        view.tick()
        clock.advance(1)
    series = view.data()["series"]
    assert series["time"][0] == clock.now - 600 and series["time"][-1] == clock.now
    assert len(series["time"]) == 601
    assert series["rate"][300] == 40.0 and series["capacity"][300] == 50.0
    assert series["rate"][-1] == 40.0 * 4 / 5  # no report this second yet: the window thins
    assert len(view.history) <= 7  # per-node totals: only what the rate window needs


def test_bag_dataframe_and_embed_parts_create_their_job_and_count_once(clock):
    view = FleetView(clock=clock)
    part = {"label": "embed_bag", "parts": 3, "unit": "texts", "total_rows": None}
    view.part_done("bag-1", 200, part=0, seconds=2.0, **part)
    clock.advance(2)
    view.part_done("bag-1", 200, part=0, seconds=2.0, **part)  # run again: a worker was lost
    view.part_done("bag-1", 200, part=1, seconds=2.0, **part)
    job = view.data()["jobs"][0]
    assert (job["label"], job["done_rows"], job["done_parts"], job["rows"]) == \
        ("embed_bag", 400, 2, None)
    assert job["rate"] == 100.0 and job["eta"] == 2.0  # 400 texts in 4 s, 1 of 3 parts left
    view.part_done("bag-1", 100, part=2, seconds=1.0, **part)
    assert view.data()["jobs"][0]["finished"] == clock.now
    clock.advance(10)
    view.part_done("bag-1", 200, part=1, seconds=2.0, **part)  # the same bag computed again
    job = view.data()["jobs"][0]
    assert (job["done_rows"], job["done_parts"], job["finished"]) == (200, 1, None)
    view.part_done("embed-2", 4096, part=0, seconds=1.0, label="embed() of 5000 texts",
                   parts=2, unit="texts", total_rows=5000)
    assert view.data()["jobs"][1]["eta"] == (5000 - 4096) / 4096
    texts = [e["text"] for e in view.data()["events"]]
    assert texts[:2] == ["job embed_bag started: 3 partitions",
                         "job embed_bag finished: 500 texts"]
