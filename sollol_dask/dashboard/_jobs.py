"""The embedding jobs the scheduler has seen: parquet runs, and the partitions of
``embed_bag``, ``embed_dataframe`` and a distributed ``embed()``, with their progress.

Pure data (an injected clock). A parquet run announces itself before its first part; the
lazy collections cannot (nothing knows when they are computed), so each of their parts
carries the job's description and the first one to arrive creates the job.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_JOBS = 100  # kept for the page; the oldest finished ones go first


class JobTracker:
    def __init__(self, clock: Callable[[], float], event: Callable[[str], None]) -> None:
        self.clock = clock
        self.event = event  # records "job ... started/finished" among the recent events
        self.jobs: dict[str, dict] = {}

    def started(self, job: str, label: str, rows: int | None, parts: int, *,
                unit: str = "rows", seconds_ago: float = 0.0) -> dict:
        """A job begins: ``rows`` in total (None: not known before its parts are read)."""
        self.jobs.pop(job, None)  # a lazy collection computed again starts afresh
        entry = self.jobs[job] = {
            "job": job, "label": label, "unit": unit, "rows": rows, "parts": parts,
            "done_rows": 0, "done_parts": 0, "row_errors": 0,
            "started": self.clock() - seconds_ago,
            "finished": None, "seen": set()}
        self._bound()
        return entry

    def part_done(self, job: str, rows: int, *, part=None, label: str | None = None,
                  parts: int | None = None, unit: str = "rows", seconds: float = 0.0,
                  total_rows: int | None = None, row_errors: int = 0) -> None:
        """One partition finished with ``rows`` rows. ``part`` (its number) makes a
        partition Dask ran twice (a worker was lost) count once; ``label`` and ``parts``
        come with the parts of lazy collections, which create their job."""
        entry = self.jobs.get(job)
        if label is not None and (entry is None or entry["finished"] is not None):
            entry = self.started(job, label, total_rows, parts or 1, unit=unit,
                                 seconds_ago=seconds)
            self.event(f"job {label} started: {parts} partitions")
        if entry is None or entry["finished"] is not None:
            return  # a part of a run whose start this monitor did not see
        if part is not None:
            if part in entry["seen"]:
                return
            entry["seen"].add(part)
        entry["done_rows"] += rows
        entry["row_errors"] += row_errors  # rows listed in _errors (parquet runs)
        entry["done_parts"] += 1
        if entry["done_parts"] >= entry["parts"]:
            entry["finished"] = self.clock()
            entry["seen"] = set()
            self.event(f"job {entry['label']} finished: {entry['done_rows']} {entry['unit']}")

    def _bound(self) -> None:
        while len(self.jobs) > MAX_JOBS:
            finished = [k for k, j in self.jobs.items() if j["finished"] is not None]
            del self.jobs[finished[0] if finished else next(iter(self.jobs))]

    def data(self) -> list[dict]:
        """The jobs, oldest first, with rate (rows or texts per second) and ETA (seconds)."""
        now = self.clock()
        out = []
        for job in self.jobs.values():
            elapsed = (job["finished"] or now) - job["started"]
            rate = job["done_rows"] / elapsed if elapsed > 0 else 0.0
            out.append({k: v for k, v in job.items() if k != "seen"}
                       | {"rate": rate, "eta": _eta(job, rate, elapsed)})
        return out


def _eta(job: dict, rate: float, elapsed: float) -> float | None:
    if job["finished"] is not None:
        return None
    if job["rows"] is not None:  # rows known: by rows left
        left = job["rows"] - job["done_rows"]
        return left / rate if rate > 0 and left > 0 else None
    if job["done_parts"]:  # only the partition count is known: by partitions left
        return elapsed * (job["parts"] - job["done_parts"]) / job["done_parts"]
    return None
