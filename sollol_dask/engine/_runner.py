"""Running one ``embed`` call as a job: lanes take slots, cut batches, send them, retry,
split or hedge them, until every row has its vector.

A batch's life: wait for a slot (oldest job first) -> the balancer names the best
free node -> its endpoint POSTs, parses and checks every row -> done; on a transient
failure or a bad answer the slot is released with the outcome and the batch waits for a
slot on another node, up to ``max_attempts``; a batch too large for a server is split,
one with a text too long is bisected to name the row.

A recording job (``record=True``: ``embed_parquet``'s default) turns what is wrong with
one row into a ``RowError`` for that row instead of failing the call: a value that is
not text or not valid Unicode (found before sending), a row the server refuses as too
long (found by bisecting), and a row the servers keep answering wrongly while they
answer the rows around it: a batch with ``SPLIT_AFTER`` such answers is bisected, and a
single row with ``ROW_ERROR_AFTER`` of them is recorded. Failures of nodes and of the
network are never row errors: they are retried elsewhere as in any job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from .._exceptions import BadResponseError, InputError, NodeError, SollolError
from .._outcome import CANCELLED, Failure, Outcome
from .._rows import BAD_ANSWER, INVALID_UNICODE, NOT_TEXT, TOO_LONG, RowError, invalid_unicode
from .._settings import RouterSettings
from ..backends._base import Undecodable, input_too_long
from ..policy._balancer import SlotBalancer
from ..policy._batching import dedupe, lane_count, left_to_send, next_batch_size
from ..policy._hedge import RECHECK_HEDGE, hedge_target, may_look_for_copies
from ..policy._limits import clip
from ..policy._retry import backoff_delay
from ._endpoint import Endpoint
from ._chunking import Chunks, embed_windows
from ._fleet import Fleet
from ._job import Batch, Job, JobResult
from ._slots import Grant, SlotSource

logger = logging.getLogger(__name__)

# Recording jobs: wrong answers (a vector failing a check, a 400 that is not the caller's
# fault) before a batch is split to find the row, and before a single row is recorded.
# Three for a row: one node's passing fault hitting the same row three times is unlikely.
SPLIT_AFTER = 2
ROW_ERROR_AFTER = 3
COUNT_AT_ONCE = 8  # tokenizer requests in flight for per-row token counts


class JobRunner:
    """Runs jobs over the fleet: the router's asynchronous core."""

    def __init__(self, settings: RouterSettings, balancer: SlotBalancer, slots: SlotSource,
                 endpoints: dict[str, Endpoint], fleet: Fleet, *, clock: Callable[[], float],
                 wall_clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]]) -> None:
        self.settings = settings
        self.balancer = balancer
        self.slots = slots
        self.endpoints = endpoints
        self.fleet = fleet
        self.clock = clock
        self.wall_clock = wall_clock
        self.sleep = sleep
        # Jobs under way in this process: a batch shrinks for the tail only when the
        # texts of all of them are few (another partition's texts fill the slots first).
        self.under_way: set[Job] = set()

    async def aembed(self, texts: Sequence[str], row_ids: Sequence | None = None,
                     on_rows: Callable[[int], None] | None = None) -> np.ndarray:
        """``on_rows(n)``: n more input rows (duplicates included) have their vectors."""
        return (await self.arun(texts, row_ids, on_rows=on_rows)).matrix

    async def arun(self, texts: Sequence, row_ids: Sequence | None = None, *,
                   record: bool = False,
                   on_rows: Callable[[int], None] | None = None,
                   plain: bool = False, find_truncated: bool = False,
                   truncate: bool | None = None,
                   on_handed_out: Callable[[], None] | None = None,
                   pending: int | None = None) -> JobResult:
        """Embed ``texts``; with ``record``, rows that cannot be embedded for a reason of
        their own are returned as row errors (zero rows) instead of raising. Under the
        ``chunk`` length policy a long text is embedded as windows, pooled (``_chunking``);
        ``plain``: send every text as it is (the windows themselves). ``find_truncated``
        (truncate policy): learn which rows the server cuts (``JobResult.truncated``, see
        ``_flag_truncated``); ``truncate``: this job's own truncate request option.
        ``on_handed_out()``: called once, on the loop, when every text has been sent (not
        called for a call with nothing to send). ``pending``: rows of the same run no
        worker has started (a batch is not shrunk for a tail that other work follows)."""
        texts = list(texts)
        labels = list(row_ids) if row_ids is not None else list(range(len(texts)))
        screened: dict[int, RowError] = {}
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                if record:
                    screened[i] = RowError(labels[i], NOT_TEXT, not_text_message(labels[i], text))
                    continue
                raise InputError(
                    f"row {labels[i]!r} is {type(text).__name__}, not str: pass text only "
                    "(embed_dataframe and embed_parquet turn missing values into null vectors)",
                    row=labels[i],
                )
            if record and (at := invalid_unicode(text)) is not None:
                screened[i] = RowError(labels[i], INVALID_UNICODE,
                                       f"row {labels[i]!r} is not valid Unicode text (a lone "
                                       f"surrogate at character {at}): clean it, e.g. "
                                       "text.encode('utf-8', 'replace').decode()")
        ref = await self.fleet.ready()
        if screened:
            keep = [i for i in range(len(texts)) if i not in screened]
            if on_rows is not None:
                on_rows(len(screened))  # refused rows are done too
            inner = await self.arun([texts[i] for i in keep], [labels[i] for i in keep],
                                    record=True, on_rows=on_rows, plain=plain,
                                    find_truncated=find_truncated, truncate=truncate,
                                    on_handed_out=on_handed_out, pending=pending)
            matrix = np.zeros((len(texts), ref.dimension), np.float32)
            matrix[keep] = inner.matrix
            errors = {keep[p]: e for p, e in inner.errors.items()} | screened
            cut = None
            if inner.truncated is not None:
                cut = np.zeros(len(texts), bool)
                cut[keep] = inner.truncated
            return JobResult(matrix, dict(sorted(errors.items())), inner.tokens, cut)
        if self.settings.length_policy == "chunk" and not plain and texts:
            chunks = await self.arun_windows(texts, labels)
            if chunks.errors and not record:
                first = chunks.errors[min(chunks.errors)]
                raise InputError(first.message, row=first.row)
            if on_rows is not None:
                on_rows(len(texts))
            return chunks.pooled(len(texts), ref.dimension, bool(ref.normalized))
        if find_truncated and self.settings.length_policy == "truncate" and texts:
            return await self._flag_truncated(texts, labels, record, on_rows)
        if not texts:
            return JobResult(np.empty((0, ref.dimension), np.float32), {}, 0)
        unique, inverse = dedupe(texts)
        first_label: dict[int, object] = {}
        for i, u in enumerate(inverse.tolist()):
            first_label.setdefault(u, labels[i])
        job = Job(unique, [first_label[i] for i in range(len(unique))], ref.dimension,
                  self.settings.max_batch_chars, priority=self.wall_clock(),
                  on_stored=_rows_reporter(on_rows, inverse, len(unique)),
                  on_handed_out=on_handed_out, pending=pending)
        job.record = record
        job.truncate = truncate
        self.under_way.add(job)
        lanes = {asyncio.ensure_future(self._lane(job))
                 for _ in range(lane_count(self.balancer.usable_slots(), len(job.texts)))}
        finished = asyncio.ensure_future(job.finished.wait())
        try:
            # Done when every row is stored: lanes still waiting to copy a batch that has
            # meanwhile come back are not waited for. A lane's error ends the call.
            while not finished.done():
                done, lanes = await asyncio.wait(lanes | {finished},
                                                 return_when=asyncio.FIRST_COMPLETED)
                lanes.discard(finished)
                ended = done - {finished}
                for lane in ended:  # each one's error is read, so none is "never retrieved"
                    if not lane.cancelled():
                        lane.exception()
                for lane in ended:
                    lane.result()
                if not lanes and not finished.done():
                    raise SollolError(f"internal error: {job.untaken} rows were never sent")
        finally:
            self.under_way.discard(job)
            for task in (*lanes, finished):
                task.cancel()
            await asyncio.gather(*lanes, finished, return_exceptions=True)
        errors: dict[int, RowError] = {}
        if job.errors:  # by position in the call: every duplicate of a failed text
            for i, u in enumerate(inverse.tolist()):
                if u in job.errors:
                    error = job.errors[u]
                    errors[i] = error if labels[i] == error.row \
                        else dataclasses.replace(error, row=labels[i])
        return JobResult(job.matrix[inverse], errors, job.tokens)

    async def _flag_truncated(self, texts: list[str], labels: list, record: bool,
                              on_rows: Callable[[int], None] | None) -> JobResult:
        """Which rows the server cuts, known rather than guessed: Ollama says nothing per
        input, so every row is first sent with truncation off; the rows refused as too
        long (found by bisecting their batch) are sent again with it on, and flagged.
        Costs a refused request and a bisection per batch holding such a row."""
        first = await self.arun(texts, labels, record=True, on_rows=on_rows, truncate=False)
        cut = np.zeros(len(texts), bool)
        refused = [i for i, e in first.errors.items() if e.reason == TOO_LONG]
        errors = {i: e for i, e in first.errors.items() if e.reason != TOO_LONG}
        tokens = first.tokens
        if refused:
            again = await self.arun([texts[i] for i in refused], [labels[i] for i in refused],
                                    record=True, truncate=True)
            tokens += again.tokens
            for p, i in enumerate(refused):
                if p in again.errors:  # a server that never truncates (llama.cpp)
                    errors[i] = again.errors[p]
                else:
                    first.matrix[i] = again.matrix[p]
                    cut[i] = True
        if errors and not record:
            error = errors[min(errors)]
            raise InputError(error.message, row=error.row)
        return JobResult(first.matrix, dict(sorted(errors.items())), tokens, cut)

    async def arun_windows(self, texts: Sequence[str], labels: Sequence) -> Chunks:
        """Every text as windows that fit the context, each with its vector (``_chunking``)."""
        ref = await self.fleet.ready()

        async def run(pieces: list[str], piece_labels: list) -> JobResult:
            return await self.arun(pieces, piece_labels, record=True, plain=True)

        return await embed_windows(texts, labels, run, context=self.context_length(),
                                   count_tokens=self._count_tokens, dimension=ref.dimension,
                                   prefix=self.settings.opts.prefix)

    def context_length(self) -> int | None:
        """Tokens a text may have: the setting, else the smallest context a node reports."""
        if self.settings.context_length:
            return self.settings.context_length
        known = [info.context_length for info in self.fleet.infos.values()
                 if info.context_length]
        return min(known) if known else None

    async def count_each(self, texts: Sequence[str]) -> list[int | None]:
        """Every text's tokens by a node's tokenizer (None where no node offers one),
        ``COUNT_AT_ONCE`` requests in flight."""
        ref = await self.fleet.ready()
        del ref  # the fleet is checked: endpoints know their servers
        gate = asyncio.Semaphore(COUNT_AT_ONCE)

        async def one(text: str) -> int | None:
            async with gate:
                return await self._count_tokens(text)

        return list(await asyncio.gather(*(one(t) for t in texts)))

    async def _count_tokens(self, text: str) -> int | None:
        """``text``'s tokens by the first node that offers a tokenizer, None if none does."""
        down = set(self.balancer.unusable())
        for endpoint in self.endpoints.values():
            if endpoint.has_tokenizer and endpoint.name not in down:
                counted = await endpoint.count_tokens(text)
                if counted is not None:
                    return counted
        return None

    async def _lane(self, job: Job) -> None:
        """Take a slot, cut a batch for that node, send it; retry or hedge; until done."""
        batch: Batch | None = None
        elsewhere: frozenset[str] = frozenset()  # a hedge looks for another node next
        looking = False  # for copies: this job has nothing left to send
        while True:
            if batch is None and not looking and job.untaken == 0:
                if not may_look_for_copies(job.lanes_looking):
                    return  # enough of this job's lanes look for copies
                job.lanes_looking += 1
                looking = True
            # A lane with nothing left to take looks for a hedge: a spare slot.
            grant = await self._acquire(frozenset(batch.tried) if batch else elsewhere,
                                        job.priority, spare=batch is None and job.untaken == 0)
            if batch is None:
                batch = job.take(self._batch_size(grant, job))
                if batch is None:
                    target, later = hedge_target(job.in_flight, grant.node, self.clock(),
                                                 self.balancer.expected_seconds)
                    if target is not None and grant.contended:
                        # Other work waits for slots: copies only when the fleet idles.
                        target, later = None, RECHECK_HEDGE
                    if target is None:
                        self.slots.release(grant, CANCELLED)
                        if later is None:
                            if looking:
                                job.lanes_looking -= 1  # another lane may look
                            return
                        await self.sleep(later)  # a copy may pay off then: look again
                        elsewhere = frozenset({grant.node})
                        continue
                    target.hedged = True
                    await self._attempt(job, target, grant, hedge=True)
                    continue
            if await self._attempt(job, batch, grant):
                batch = None

    def _batch_size(self, grant: Grant, job: Job) -> int:
        size = self.balancer.batch_size_for(grant.node, self.settings.batch_size,
                                            self.settings.batch_seconds)
        remaining, run_end = left_to_send(job, self.under_way)
        # Requests waiting for slots: the fleet is full, full batches; unless this is the
        # run's own end (those requests are its last ones too: a full batch queued now
        # would finish after the rest of the fleet is idle). What is left here is shared
        # over the slots this process holds and those nobody holds: with W workers about
        # 1/W of the fleet's (shared over the whole fleet, batches came out W times too
        # small, and cost the CPU that kept the fleet from being full).
        free = 0 if grant.contended else self.slots.free_slots()
        slots = max(1, min(self.balancer.usable_slots(), self.balancer.held + free))
        return next_batch_size(size, self.balancer.expected_seconds(grant.node, size),
                               grant.contended and not run_end, self.settings.batch_seconds,
                               remaining, slots)

    async def _acquire(self, avoid: frozenset[str], priority: float,
                       spare: bool = False) -> Grant:
        while True:
            if not self.balancer.has_usable_node():
                raise self.fleet.no_node_error()
            if not self.balancer.any_up():
                await self.fleet.wait_for_up_node()
            grant = await self.slots.acquire(avoid, priority, spare)
            if grant is not None:
                return grant

    async def _attempt(self, job: Job, batch: Batch, grant: Grant, hedge: bool = False) -> bool:
        """Send ``batch`` on the granted node. True: the batch needs nothing more from this
        lane (stored, replaced by halves, or a hedge copy that lost); False: retry it."""
        name = grant.node
        request = asyncio.ensure_future(self.endpoints[name].embed(
            job.texts_of(batch), job.labels_of(batch),
            self.balancer.timeout_for(name, batch.size), self.fleet.reference,
            truncate=job.truncate))
        batch.running[name] = (request, self.clock())
        job.in_flight.add(batch)
        if not hedge:
            batch.attempts += 1
        started = self.clock()
        try:
            # Shielded: a lane stopped (the job ended while this copy lost, or the call was
            # cancelled) leaves its request to run out.
            vectors, tokens = await asyncio.shield(request)
        except asyncio.CancelledError:
            batch.running.pop(name, None)
            self._release_when_answered(request, grant, batch.size, started)
            raise
        except (NodeError, BadResponseError) as err:
            batch.running.pop(name, None)
            self.slots.release(grant, Outcome(failure=err.failure, hard=err.hard,
                                              retry_after=getattr(err, "retry_after", None),
                                              reason=clip(err)))
            if err.failure is Failure.NODE_FATAL:
                self.fleet.exclude(name, str(err))
            else:
                self.fleet.fail_if_none_usable()  # the last node may have been quarantined
            if batch.done or hedge:
                return True
            return await self._after_failure(job, batch, name, err)
        batch.running.pop(name, None)
        self.slots.release(grant, Outcome(texts=batch.size, seconds=self.clock() - started,
                                          tokens=tokens or 0))
        if job.store(batch, vectors, tokens):
            for loser in batch.running:  # the slower copy lost (its lane stops at the end)
                self.balancer.overtaken(loser)
        return True

    def _release_when_answered(self, request: asyncio.Future, grant: Grant, texts: int,
                               started: float) -> None:
        """Give ``grant``'s slot back when the server is done with ``request``, not when
        we stop waiting for it: a server notices a hang-up only later (or, like Ollama's
        single slot, finishes the request anyway), and a slot freed at once would let a
        new request in while the old one still runs: over the node's cap. The request
        goes on to its end (or its timeout); its vectors are not needed, but the node's
        counters show the work it did (as the server's own would)."""
        def release(done: asyncio.Future) -> None:
            if done.cancelled() or done.exception() is not None:
                self.slots.release(grant, CANCELLED)
                return
            _, tokens = done.result()
            self.slots.release(grant, Outcome(texts=texts, seconds=self.clock() - started,
                                              tokens=tokens or 0))

        if request.done():
            release(request)
        else:
            request.add_done_callback(release)

    async def _after_failure(self, job: Job, batch: Batch, name: str,
                             err: NodeError | BadResponseError) -> bool:
        labels = job.labels_of(batch)
        failure = err.failure
        if failure is Failure.CALLER:
            raise err
        if failure in (Failure.TOO_LONG, Failure.TOO_BIG):
            if batch.size == 1:
                if failure is Failure.TOO_LONG:
                    if job.record:
                        job.fail(batch, self._too_long(job, batch, name, err))
                        return True
                    raise input_too_long(labels[0], name, str(err)) from None
                raise err
            if failure is Failure.TOO_BIG:  # cut to the limit learnt (or half the batch)
                self.balancer.limit_batch(name, batch.size, err.max_inputs)
                step = min(self.balancer.nodes[name].max_batch, (batch.size + 1) // 2)
            else:  # bisect to find the row
                step = (batch.size + 1) // 2
            _split(job, batch, step)
            return True
        if job.record and _answered(err):
            batch.answered += 1
            if batch.size == 1 and batch.answered >= ROW_ERROR_AFTER:
                job.fail(batch, RowError(
                    labels[0], BAD_ANSWER,
                    f"row {labels[0]!r}: {batch.answered} answers for this row alone were "
                    f"wrong while the rows around it were embedded (last, from {name}: "
                    f"{clip(err)}); look at the text, or rerun with --retry-errors "
                    "(retry_errors=True) once the servers are fixed", node=name))
                return True
            if batch.size > 1 and batch.answered >= SPLIT_AFTER:
                _split(job, batch, (batch.size + 1) // 2)  # the rows around it go through
                return True
        batch.tried.add(name)
        logger.info("batch of %d (rows %r..%r) failed on %s, attempt %d: %s",
                    batch.size, labels[0], labels[-1], name, batch.attempts, clip(err))
        if batch.attempts >= self.settings.max_attempts:
            raise NodeError(
                f"rows {labels[0]!r}..{labels[-1]!r} failed on {batch.attempts} attempts "
                f"(nodes tried: {', '.join(sorted(batch.tried))}); last error: {clip(err)}. Check "
                "the nodes, or raise max_attempts",
                node=name, retryable=True,
            )
        await self.sleep(backoff_delay(batch.attempts))
        return False

    def _too_long(self, job: Job, batch: Batch, name: str, err: Exception) -> RowError:
        text, label = job.texts[batch.start], job.labels[batch.start]
        info = self.fleet.infos.get(name)
        context = f" of {info.context_length} tokens" if info and info.context_length else ""
        return RowError(
            label, TOO_LONG,
            f"row {label!r} is {len(text)} characters long, longer than the model's "
            f"context{context} on {name} (server said: {clip(err, 160)}): shorten or split "
            "it, or choose the 'truncate' or 'chunk' length policy", node=name)


def _split(job: Job, batch: Batch, step: int) -> None:
    """Replace ``batch`` by parts of ``step`` rows, each with fresh attempts."""
    job.in_flight.discard(batch)
    for start in reversed(range(batch.start, batch.stop, step)):
        job.requeue(Batch(start, min(start + step, batch.stop)))


def _answered(err: Exception) -> bool:
    """A node answered, wrongly for what it was sent: vectors that fail a check, or a
    400 that is not the caller's fault (Ollama: NaN output, a runner crash on one input).
    Not a body that does not decode, a refused connection or a timeout."""
    if isinstance(err, BadResponseError):
        return err.failure is Failure.BAD_RESPONSE and not isinstance(err, Undecodable)
    return isinstance(err, NodeError) and err.status == 400 \
        and err.failure is Failure.TRANSIENT


def not_text_message(label: object, value: object) -> str:
    return (f"row {label!r} is {type(value).__name__} ({value!r:.40}), not text: convert the "
            "column to strings")


def _rows_reporter(on_rows: Callable[[int], None] | None, inverse: np.ndarray,
                   unique: int) -> Callable[[int, int], None] | None:
    """``on_stored(start, stop)`` for a job of deduplicated texts: tells ``on_rows`` how
    many input rows those unique texts stand for. A failing callback (a progress
    display) is logged and dropped, never fails the job."""
    if on_rows is None:
        return None
    before = np.concatenate(([0], np.cumsum(np.bincount(inverse, minlength=unique))))
    callback: list = [on_rows]

    def on_stored(start: int, stop: int) -> None:
        if not callback:
            return
        try:
            callback[0](int(before[stop] - before[start]))
        except Exception:
            logger.info("row progress callback failed; progress is off for this call",
                        exc_info=True)
            callback.clear()

    return on_stored
