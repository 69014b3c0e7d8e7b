"""Which node gets the next batch: a pure policy object with an injected clock.

Observations go in (``release`` with the outcome, ``probe_result``), decisions come out
(``choose``, ``due_probes``, ``timeout_for``). No I/O and no sleeping, so tests drive it
with a fake clock and assert exact choices.

Policy:
- A node takes at most ``cap`` batches at once (Ollama: 2, since it embeds one input at
  a time and more requests only queue).
- Work-conserving: whenever any node has a free slot, a waiting batch goes to the free
  node with the best measured speed, so a node 10x faster ends up with ~10x the texts.
  A node not yet measured is tried first, so every node gets measured.
- Health: a hard failure (connection refused, timeout) ejects a node at once; other
  transient failures eject it after ``eject_after`` in a row. An ejected node waits
  ``backoff`` seconds (doubling, capped), then is due for a probe; a good probe restores
  it, a failed one ejects it again. A node found unfit for the run (wrong model,
  dimension, digest, credentials) is excluded for good.
- Bad answers (vectors failing a check, bodies too large, dripping, not JSON) are
  strikes: each ejects the node at once (the answer was wrong, not late), and a probe
  cannot clear them, since a node can describe itself well and still embed wrongly; only
  a good batch does. After ``quarantine_after`` strikes in a row the node is quarantined
  for ``quarantine`` seconds (doubling each time, capped), then probed; one more bad
  answer quarantines it again.
- A node that asks for time (429 or 503 with Retry-After) gets no request until then;
  that is not held against it.
- A node not measured yet gets ``first_timeout`` (room for a cold model load); each
  time that runs out it gets a quarter of it (at least ``min_timeout``), so a node that
  never answers costs minutes once, not on every attempt.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from ._free_heap import FreeHeap, passed_over
from ._limits import clip
from ._metrics import LATENCY_BUCKETS, LatencySketch
from .._outcome import Failure, Outcome



class Health(enum.Enum):
    UP = "up"
    EJECTED = "ejected"  # waiting for its back-off to end
    PROBING = "probing"  # a probe is in flight
    WARMING = "warming"  # its model is loading; it joins when the load is done
    EXCLUDED = "excluded"  # unfit for this run
    QUARANTINED = "quarantined"  # kept answering wrongly; probed again after a long wait


_OUT = (Health.EXCLUDED, Health.QUARANTINED)  # no work now, nor soon


def _negate(rank: tuple) -> tuple:
    """A rank as a min-heap key (best first)."""
    return tuple(-x if not isinstance(x, bool) else not x for x in rank)


@dataclasses.dataclass
class NodeSlots:
    """The balancer's view of one node; also what metrics and the dashboard read."""

    name: str
    cap: int
    weight: float = 1.0
    inflight: int = 0
    health: Health = Health.UP
    reason: str = ""
    consecutive_failures: int = 0
    ejections: int = 0
    retry_at: float = 0.0
    seconds_per_text: float | None = None  # EWMA of latency / texts, queueing included
    max_batch: int | None = None  # the most texts the server accepted per request, if limited
    strikes: int = 0  # bad answers since its last good batch (probes do not clear them)
    quarantines: int = 0
    resume_at: float = 0.0  # it asked us to wait (Retry-After) until then
    first_timeout: float | None = None  # its own, once a first request timed out
    requests: int = 0
    texts: int = 0
    tokens: int = 0  # as the server reported them (Ollama prompt_eval_count, OpenAI usage)
    errors: Counter = dataclasses.field(default_factory=Counter)
    max_inflight_seen: int = 0
    overtaken: int = 0  # its batches a copy on another node finished first (slow or hung)
    # Request latencies of successful batches, counted per bucket (upper bounds below).
    latency_counts: list[int] = dataclasses.field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency: LatencySketch = dataclasses.field(default_factory=LatencySketch)  # for p50/p95

    @property
    def free(self) -> bool:
        """Up with a slot free (a pause aside: see ``resume_at``)."""
        return self.health is Health.UP and self.inflight < self.cap

    @property
    def speed(self) -> float | None:
        """Measured texts per second with ``cap`` requests in flight, if known."""
        if not self.seconds_per_text:
            return None
        return self.cap / self.seconds_per_text if self.cap else None


class SlotBalancer:
    def __init__(
        self,
        names: Sequence[str],
        caps: Sequence[int],
        *,
        weights: Sequence[float | None] | None = None,
        clock: Callable[[], float],
        eject_after: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 2.0,  # a probe is a few cheap GETs; a node back soon works soon
        ewma_alpha: float = 0.3,
        min_timeout: float = 5.0,
        timeout_factor: float = 10.0,
        first_timeout: float = 60.0,
        quarantine_after: int = 3,
        quarantine: float = 300.0,
        max_quarantine: float = 3600.0,
    ) -> None:
        if len(names) != len(caps):
            raise ValueError("names and caps differ in length")
        weights = weights or [None] * len(names)
        self.nodes = {
            n: NodeSlots(n, int(c), float(w or 1.0)) for n, c, w in zip(names, caps, weights)
        }
        self._order = {n: i for i, n in enumerate(names)}
        self._free = FreeHeap(lambda s: _negate(self._rank(s)))
        self._free.rebuild(self.nodes.values())
        # usable_slots() is asked for every batch: kept, and forgotten whenever a node
        # joins, changes cap, or enters or leaves _OUT (a scan of 1,024 nodes per batch
        # was a third of a worker router's CPU).
        self._usable_slots: int | None = None
        self.held = 0  # slots taken here and not given back, over all nodes
        self.clock = clock
        self.eject_after = eject_after
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.alpha = ewma_alpha
        self.min_timeout = min_timeout
        self.timeout_factor = timeout_factor
        self.first_timeout = first_timeout
        self.quarantine_after = quarantine_after
        self.quarantine_seconds = quarantine
        self.max_quarantine = max_quarantine

    # -- decisions -------------------------------------------------------------------

    def add_node(self, name: str, cap: int, weight: float | None = None) -> None:
        """Learn a node while running (the cluster's broker hears of nodes from workers);
        a known node keeps its state, and its cap becomes the larger of the two."""
        self._usable_slots = None
        if name in self.nodes:
            self.nodes[name].cap = max(self.nodes[name].cap, int(cap))
        else:
            self.nodes[name] = NodeSlots(name, int(cap), float(weight or 1.0))
            self._order[name] = len(self._order)
        self._free.touch(self.nodes[name])

    def choose(self, avoid: Iterable[str] = (), unusable: Iterable[str] = ()) -> str | None:
        """Take a slot on the best free node, or ``None`` if no slot is free.

        Nodes in ``avoid`` (those a batch already failed on) are passed over while any
        other up node exists; if they are the only ones up, they are used anyway.
        Nodes in ``unusable`` are never chosen (a worker's own view of dead nodes).
        (Not to be confused with ``exclude``: a node unfit for the run, for good.)
        """
        return self._choose(set(avoid), set(unusable), self.clock())

    def choose_many(self, count: int, avoid: Iterable[str] = (),
                    unusable: Iterable[str] = ()) -> list[str]:
        """Up to ``count`` slots at once, each on the best node free at that moment, as
        ``count`` calls of ``choose`` would take them (the broker's bulk grants)."""
        avoided, banned, now = set(avoid), set(unusable), self.clock()
        taken: list[str] = []
        while len(taken) < count and (name := self._choose(avoided, banned, now)) is not None:
            taken.append(name)
        return taken

    def _choose(self, avoided: set[str], banned: set[str], now: float) -> str | None:
        if avoided and not any(s.health is Health.UP and s.name not in banned
                               and s.name not in avoided and s.resume_at <= now
                               for s in self.nodes.values()):
            avoided = set()  # only avoided nodes are up: use them anyway
        name = self._free.best(self.nodes, passed_over(banned, avoided, now), take=True)
        if name is not None:
            self.note_acquired(name)
        return name

    def adopt_speed(self, name: str, seconds_per_text: float | None) -> None:
        """Take another's measurement of a node this balancer has not measured itself
        (the broker's, from every worker's batches)."""
        s = self.nodes[name]
        if s.seconds_per_text is None and seconds_per_text:
            s.seconds_per_text = float(seconds_per_text)
            self._free.touch(s)

    def note_acquired(self, name: str) -> None:
        """Count a slot taken on ``name`` (by ``choose``, or granted by the broker)."""
        s = self.nodes[name]
        s.inflight += 1
        self.held += 1
        s.max_inflight_seen = max(s.max_inflight_seen, s.inflight)
        self._free.touch(s)

    def has_free_slot(self, unusable: Iterable[str] = ()) -> bool:
        return self._free.best(self.nodes, passed_over(set(unusable), (), self.clock()),
                               take=False) is not None

    def unusable(self) -> list[str]:
        """Nodes this process cannot send to now: not up, or asked for a pause."""
        now = self.clock()
        return [s.name for s in self.nodes.values()
                if s.health is not Health.UP or s.resume_at > now]

    def end_pauses(self) -> bool:
        """Clear pauses that are over; True if any was (waiting batches may go there)."""
        now = self.clock()
        ended = [s for s in self.nodes.values() if s.resume_at and s.resume_at <= now]
        for s in ended:
            s.resume_at = 0.0
        return bool(ended)

    def _rank(self, s: NodeSlots) -> tuple:
        # Unmeasured first (to measure them), then by measured speed, then by the weight
        # the user gave, then fewest in flight, then configuration order.
        speed = s.speed
        return (speed is None, speed or 0.0, s.weight, -s.inflight, -self._order[s.name])

    def usable_slots(self) -> int:
        """Slots of every node that is or may soon become usable (not excluded or
        quarantined)."""
        if self._usable_slots is None:
            self._usable_slots = sum(s.cap for s in self.nodes.values() if s.health not in _OUT)
        return self._usable_slots

    def has_usable_node(self) -> bool:
        """True while some node is up or may soon come back (ejected or being probed)."""
        return any(s.health not in _OUT for s in self.nodes.values())

    def any_up(self) -> bool:
        return any(s.health is Health.UP for s in self.nodes.values())

    def due_probes(self) -> list[str]:
        """Ejected or quarantined nodes whose wait has ended; marked as being probed."""
        now = self.clock()
        due = [s for s in self.nodes.values()
               if s.health in (Health.EJECTED, Health.QUARANTINED) and s.retry_at <= now]
        for s in due:
            s.health = Health.PROBING
        if due:
            self._usable_slots = None  # quarantined ones are back in
        return [s.name for s in due]

    def batch_size_for(self, name: str, largest: int, target_seconds: float,
                       smallest: int = 8, first: int = 16) -> int:
        """Texts for the next batch on ``name``: about ``target_seconds`` of its measured
        latency (short tails on slow nodes, few requests on fast ones), within
        ``smallest``..``largest``; ``first`` until the node is measured, so a slow node
        is known after one short batch instead of holding a long one."""
        s = self.nodes[name]
        if s.max_batch:
            largest = min(largest, s.max_batch)
        if not s.seconds_per_text:
            return min(first, largest)
        return max(min(smallest, largest), min(largest, int(target_seconds / s.seconds_per_text)))

    def limit_batch(self, name: str, texts: int, allowed: int | None = None) -> None:
        """``name`` refused a batch of ``texts`` as too large (TEI: over 32 inputs by
        default): from now on send it at most ``allowed`` (when the server said its limit),
        else half as many, so the limit costs a refusal or a few, not one per batch."""
        s = self.nodes[name]
        if allowed and 0 < allowed < texts:
            s.max_batch = allowed if s.max_batch is None else min(s.max_batch, allowed)
        elif s.max_batch is None or texts <= s.max_batch:  # not an older, larger batch
            s.max_batch = max(1, texts // 2)

    def expected_seconds(self, name: str, texts: int) -> float | None:
        spt = self.nodes[name].seconds_per_text
        return None if spt is None else spt * texts

    def timeout_for(self, name: str, texts: int) -> float:
        """Seconds to wait for a batch: generous until the node is measured, then
        ``timeout_factor`` x the expected latency (never under ``min_timeout``)."""
        s = self.nodes[name]
        if s.seconds_per_text is None:
            return s.first_timeout or self.first_timeout
        return max(self.min_timeout, self.timeout_factor * s.seconds_per_text * max(texts, 1))

    # -- observations ----------------------------------------------------------------

    def settle(self, name: str, outcome: Outcome) -> None:
        """``release`` with a request's ``Outcome``."""
        self.release(name, texts=outcome.texts, seconds=outcome.seconds, tokens=outcome.tokens,
                     failure=outcome.failure, hard=outcome.hard,
                     retry_after=outcome.retry_after, reason=outcome.reason)

    def release(self, name: str, *, texts: int = 0, seconds: float = 0.0, tokens: int = 0,
                failure: Failure | None = None, hard: bool = False,
                retry_after: float | None = None, reason: str = "") -> None:
        """Give back a slot. ``failure`` names the error kind (None for success);
        ``hard`` marks failures that show the node is unreachable (eject at once);
        ``retry_after``: seconds a busy node asked us to wait; ``reason``: the error."""
        s = self.nodes[name]
        if s.inflight > 0:
            s.inflight -= 1
            self.held -= 1
        try:
            self._settle(s, texts, seconds, tokens, failure, hard, retry_after, reason)
        finally:
            self._free.touch(s)  # a slot is free, the speed may have changed

    def _settle(self, s: NodeSlots, texts: int, seconds: float, tokens: int,
                failure: Failure | None, hard: bool, retry_after: float | None,
                reason: str) -> None:
        name = s.name
        if failure is Failure.CANCELLED:  # abandoned by us (a hedge won, the run stopped): no verdict
            return
        s.requests += 1
        if failure is None:
            s.texts += texts
            s.tokens += tokens
            s.consecutive_failures = s.strikes = 0
            s.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            s.latency_sum += seconds
            s.latency.add(seconds)
            if texts > 0 and seconds > 0:
                sample = seconds / texts
                s.seconds_per_text = (
                    sample if s.seconds_per_text is None
                    else (1 - self.alpha) * s.seconds_per_text + self.alpha * sample
                )
            return
        s.errors[failure.value] += 1  # counted by name: metrics and events are msgpack
        if failure is Failure.BUSY:  # it asked for time: give it that, hold nothing against it
            s.resume_at = max(s.resume_at, self.clock() + (retry_after or 0.0))
            return
        if failure is Failure.TIMEOUT and s.seconds_per_text is None:
            s.first_timeout = max(self.min_timeout, (s.first_timeout or self.first_timeout) / 4)
        if failure.request_fault:
            return
        s.consecutive_failures += 1
        last = f"{failure.value} ({clip(reason)})" if reason else failure.value
        if failure is Failure.BAD_RESPONSE:
            self.strike(name, last)
        elif s.health is Health.UP and (hard or s.consecutive_failures >= self.eject_after):
            self.eject(name, f"{s.consecutive_failures} failure(s) in a row, last: {last}")

    def overtaken(self, name: str) -> None:
        """A copy of a batch this node still held finished first elsewhere: not a failure
        (no ejection), but what a run's report shows of a node that is slow or hung."""
        self.nodes[name].overtaken += 1

    def strike(self, name: str, reason: str) -> None:
        """Count a bad answer (from a batch or a probe): eject the node, or quarantine it
        after ``quarantine_after`` in a row."""
        s = self.nodes[name]
        s.strikes += 1
        if s.strikes >= self.quarantine_after:
            self.quarantine(name, f"{s.strikes} bad answers in a row, last: {reason}")
        else:
            self.eject(name, f"bad answer {s.strikes} of {self.quarantine_after} before "
                             f"quarantine: {reason}")

    def quarantine(self, name: str, reason: str) -> None:
        s = self.nodes[name]
        if s.health in (Health.EXCLUDED, Health.QUARANTINED):
            return
        seconds = min(self.max_quarantine, self.quarantine_seconds * 2 ** s.quarantines)
        s.quarantines += 1
        s.health, s.retry_at = Health.QUARANTINED, self.clock() + seconds
        self._usable_slots = None
        s.reason = clip(f"quarantined for {seconds:g} s: {reason}")

    def eject(self, name: str, reason: str) -> None:
        s = self.nodes[name]
        if s.health in (Health.EXCLUDED, Health.QUARANTINED):
            return
        s.health = Health.EJECTED
        s.reason = clip(reason)
        s.retry_at = self.clock() + min(self.max_backoff, self.backoff * 2 ** s.ejections)
        s.ejections += 1

    def checking(self, name: str) -> None:
        """A node that joined during a run: no work until its check admits it."""
        s = self.nodes[name]
        if s.health not in _OUT:
            s.health, s.reason = Health.PROBING, "joined; being checked"

    def warming(self, name: str) -> None:
        s = self.nodes[name]
        if s.health not in _OUT:
            s.health, s.reason = Health.WARMING, "loading the model"

    def probe_result(self, name: str, ok: bool, reason: str = "") -> None:
        s = self.nodes[name]
        if s.health in _OUT:
            return
        if ok:
            # The last measured speed is kept: timeouts stay tight, so a node that answers
            # probes but hangs on embeddings costs one short timeout again, not the
            # first-request allowance (a model found cold is warmed before it rejoins).
            # Strikes stay: a quarantined node that embeds wrongly again goes straight back.
            s.health, s.reason, s.consecutive_failures = Health.UP, "", 0
            self._free.touch(s)
        else:
            self.eject(name, reason or "probe failed")

    def exclude(self, name: str, reason: str) -> None:
        s = self.nodes[name]
        s.health, s.reason = Health.EXCLUDED, clip(reason)
        self._usable_slots = None

    def set_cap(self, name: str, cap: int) -> None:
        self.nodes[name].cap = max(1, int(cap))
        self._usable_slots = None
        self._free.touch(self.nodes[name])
