"""The scheduler's fleet view, with a fake clock: merging, rates, jobs, events."""

from sollol_dask.dashboard import FleetView


def node(name, texts, state="up", inflight=0, errors=None, cap=2):
    return {"node": name, "model": "m", "digest": "abc", "state": state, "reason": "",
            "cap": cap, "inflight": inflight, "requests": texts // 10, "texts": texts,
            "errors": errors or {}, "speed": 50.0, "latency_counts": [0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0],
            "latency_sum": 0.6, "size": None, "size_vram": None}


def test_workers_are_merged_per_node_and_rates_decay_when_idle(clock):
    view = FleetView(clock=clock)
    view.update("w1", "c", [node("a", 100, inflight=1), node("b", 10)])
    view.update("w2", "c", [node("a", 50, inflight=1, state="ejected")])
    rows = {r["node"]: r for r in view.data()["nodes"]}
    assert rows["a"]["texts"] == 150 and rows["a"]["inflight"] == 2
    assert rows["a"]["state"] == "up (1 of 2 workers), ejected (1 of 2 workers)"
    assert rows["a"]["p50"] == 0.25
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
    assert texts[-2:] == ["job j1 finished", "worker w1 left"]
    assert view.data()["nodes"][0]["inflight"] == 0 and view.data()["nodes"][0]["texts"] == 10
