"""JobQueue on Redis through the `bullmq` PyPI package (BullMQ's data format).

The four gaps of the Python worker (CONTRIBUTING.md, "Hand-written components") and what
we do about them:
(a) redis-py >= 8 puts a 5 s socket timeout on every connection, which breaks the idle
    worker's blocking pop: the worker's blocking connection gets `socket_timeout=None`.
(b) the worker ignores the limiter's `limitUntil`: `_Worker` sleeps until it instead of
    falling back to a 5 s blocking pop; `pause_all` writes bullmq's limiter key
    (`Queue.rateLimit`) and every worker runs with a limiter whose `max` is never reached
    by ordinary traffic, so only a pause limits.
(c) delays round up to whole seconds until the blocking connection has read the Redis
    version: we read it before `run()`.
(d) jobId dedupe lasts only while the job record exists: completed jobs are kept for
    `keep_completed_s` (longer than the reconciler's window).

Lanes: high-priority jobs (ChunkJob.high, the transactional lane) go to a second BullMQ
queue, `<name>-high`, served by a worker of its own in every process, so bulk jobs never
hold its places. A pause (pause_all) holds both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import redis.asyncio as aioredis
import structlog
from bullmq import DelayedError, Queue, Worker
from redis.exceptions import NoScriptError

from mailer.queue.base import ChunkJob, DelayJob, JobContext, JobHandler
from mailer.queue.bullmq_add import JobAdder
from mailer.queue.retry import retry_delay_ms

log = structlog.get_logger(__name__)

JOB_NAME = "chunk"
BACKOFF_TYPE = "mailer-exp-jitter"
MIN_REDIS_VERSION = (6, 2)
# Value Queue.rateLimit writes (2^53 - 1) and our limiter "max": the per-second counter the
# limiter keeps never gets near 2^52, a pause is always above it.
_PAUSED_VALUE = 2**53 - 1
_LIMITER = {"max": 2**52, "duration": 1000}
_ADD_BATCH = 500
_PENDING_TTL_S = 86_400
# How long an id recorded by an enqueue counts as pending without its job: far longer than
# one addBulk takes. Only a job lost within this time of its enqueue waits for it to pass.
ENQUEUE_WINDOW_MS = 60_000

# Extend (never shorten) a pause. KEYS[1] limiter key; ARGV: ms, paused value, limiter max.
_PAUSE_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= tonumber(ARGV[3]) and redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""

# Job ids are recorded in their batch's pending set (a sorted set: job id -> server time in
# ms when its enqueue began) BEFORE the jobs are added, so that no live job is ever missing
# from it. KEYS[1]: the batch's pending key; ARGV[1]: TTL s; ARGV[2..]: job ids. A plain set
# left by an older version is taken over (its ids as long enqueued).
_MARK_PENDING_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  local old = redis.call('SMEMBERS', KEYS[1])
  redis.call('DEL', KEYS[1])
  for _, id in ipairs(old) do redis.call('ZADD', KEYS[1], 0, id) end
end
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return now
"""

# Whether a batch has a live job, or an enqueue of one in flight. KEYS[1]: the batch's
# pending key; KEYS[2], KEYS[3]: completed and failed sets; ARGV[1]: job key prefix;
# ARGV[2]: enqueue window ms; ARGV[3]: TTL s. Per id:
#   not finished, job exists            -> pending (waiting, delayed, active: any state);
#   not finished, no job, id recent     -> pending: its enqueue is between the bookkeeping
#                                          and the add (dropping it here would hide the job
#                                          for good once added);
#   finished, or no job and id old      -> not pending; dropped once past the window, so a
#                                          stale set (crash, FLUSHALL, expiry, a job removed
#                                          under us) never claims a live job.
# A live find renews the key's TTL: the set lives as long as the batch has a job.
_HAS_PENDING_LUA = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local function check(id, since)
  local finished = redis.call('ZSCORE', KEYS[2], id) or redis.call('ZSCORE', KEYS[3], id)
  local recent = now - since < window
  if not finished and (recent or redis.call('EXISTS', ARGV[1] .. id) == 1) then
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  if recent then return 0 end
  return -1
end
if kind == 'set' then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local r = check(id, 0)
    if r == 1 then return 1 end
    redis.call('SREM', KEYS[1], id)
  end
  return 0
end
local start = 0
while true do
  local page = redis.call('ZRANGE', KEYS[1], start, start + 99, 'WITHSCORES')
  if #page == 0 then return 0 end
  local kept = 0
  for i = 1, #page, 2 do
    local r = check(page[i], tonumber(page[i + 1]))
    if r == 1 then return 1 end
    if r == 0 then kept = kept + 1 else redis.call('ZREM', KEYS[1], page[i]) end
  end
  start = start + kept
end
"""


def _backoff_strategy(attempts_made: int, _type: str, _err: Any, job: Any) -> int:
    backoff = job.opts.get("backoff") or {}
    return retry_delay_ms(int(backoff.get("delay") or 0), attempts_made)


HIGH_SUFFIX = "-high"


def _job_data(job: ChunkJob) -> dict[str, Any]:
    data: dict[str, Any] = {"b": job.batch_id, "s": job.seq_start, "e": job.seq_end}
    if job.tag:
        data["t"] = job.tag
    if job.high:
        data["h"] = 1
    return data


class _Worker(Worker):  # type: ignore[misc]
    """bullmq Worker that honours the limiter's limitUntil (gap b), like the Node worker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limited_until = 0.0
        self._closing_event = asyncio.Event()

    async def moveToActive(self, token: str) -> Any:
        job = await super().moveToActive(token)
        if job is None and self.limitUntil > 0:
            self._limited_until = time.monotonic() + self.limitUntil / 1000
        return job

    async def getNextJob(self, token: str) -> Any:
        delay = self._limited_until - time.monotonic()
        if delay <= 0:
            return await super().getNextJob(token)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing_event.wait(), delay)
        if self.closing:
            return None
        # Straight to moveToActive: a blocking pop would sleep up to drainDelay more.
        job = await self.moveToActive(token)
        if job is not None:
            self.emit("active", job, "waiting")
        return job

    async def close(self, force: bool = False) -> None:
        self._closing_event.set()
        await super().close(force)


class BullQueue:
    def __init__(
        self,
        redis_url: str,
        name: str,
        *,
        attempts: int,
        backoff_ms: int,
        prefix: str = "bull",
        keep_completed_s: int = 600,
        keep_failed: int = 1000,
        lock_duration_ms: int = 30_000,
        stalled_interval_ms: int = 30_000,
        enqueue_window_ms: int = ENQUEUE_WINDOW_MS,
    ) -> None:
        self._url = redis_url
        self._name = name
        self._prefix = prefix
        self._attempts = max(1, attempts)
        self._lock_duration_ms = lock_duration_ms
        self._stalled_interval_ms = stalled_interval_ms
        self._enqueue_window_ms = max(1, enqueue_window_ms)
        self._job_opts: dict[str, Any] = {
            "attempts": self._attempts,
            "backoff": {"type": BACKOFF_TYPE, "delay": max(0, backoff_ms)},
            "removeOnComplete": {"age": keep_completed_s},
            "removeOnFail": {"count": keep_failed, "age": 7 * 86_400},
        }
        # Our own client for the producer side: bullmq's would retry a refused connection for
        # minutes (20 tries, backoff up to 20 s); enqueue and ping must fail fast instead.
        self._client: aioredis.Redis = aioredis.from_url(redis_url, decode_responses=True)
        self._queue = Queue(name, {"connection": self._client, "prefix": prefix})
        self._keys: dict[str, str] = self._queue.keys
        self._high_queue = Queue(name + HIGH_SUFFIX, {"connection": self._client, "prefix": prefix})
        self._high_keys: dict[str, str] = self._high_queue.keys
        self._pause_script = self._client.register_script(_PAUSE_LUA)
        self._mark_script = self._client.register_script(_MARK_PENDING_LUA)
        self._pending_script = self._client.register_script(_HAS_PENDING_LUA)
        self._scripts_loaded = False  # see _mark_and_add
        self._adders: dict[bool, JobAdder] = {}  # per lane (high or not), see _adder
        self._worker: _Worker | None = None  # the bulk lane's
        self._high_worker: _Worker | None = None
        self._starting = False
        self._stop_requested = False

    @property
    def name(self) -> str:
        return self._name

    def _pending_key(self, batch_id: str, high: bool = False) -> str:
        name = self._name + HIGH_SUFFIX if high else self._name
        return f"{self._prefix}:{name}:mailer:pending:{batch_id}"

    # Producer side

    async def enqueue(
        self, jobs: Sequence[ChunkJob], *, delay_ms: int = 0, replace_finished: bool = False
    ) -> None:
        if not jobs:
            return
        opts = dict(self._job_opts)
        if delay_ms > 0:
            opts["delay"] = delay_ms
        for high in (True, False):
            lane = [job for job in jobs if job.high == high]
            if lane:
                await self._enqueue_lane(lane, opts, replace_finished, high=high)

    async def _enqueue_lane(
        self, jobs: Sequence[ChunkJob], opts: dict[str, Any], replace_finished: bool, *, high: bool
    ) -> None:
        queue = self._high_queue if high else self._queue
        for start in range(0, len(jobs), _ADD_BATCH):
            part = jobs[start : start + _ADD_BATCH]
            if not replace_finished:
                await self._mark_and_add(part, opts, high)
                continue
            # The pending sets first, slice by slice: a job missing from its set would be
            # invisible to the reconciler, an id whose add never happens is pending for the
            # enqueue window only (has_pending_for).
            await self._mark_pending(part, high)
            await self._remove_finished([job.job_id for job in part], high)
            await queue.addBulk(
                [
                    {
                        "name": JOB_NAME,
                        "data": _job_data(job),
                        "opts": {**opts, "jobId": job.job_id},
                    }
                    for job in part
                ]
            )

    async def _mark_and_add(
        self, jobs: Sequence[ChunkJob], opts: dict[str, Any], high: bool
    ) -> None:
        """The pending marks and the jobs in one pipeline: one Redis round trip, and the
        marks are in place whenever the jobs are, since Redis runs one connection's commands
        in the order sent (no MULTI/EXEC: it cost ~20 µs of API CPU a POST and would add
        nothing; a mark whose add never runs is the window has_pending_for allows anyway).
        bullmq's addBulk would send the adds on their own: a single-recipient POST cost
        three round trips (tests/batches/test_round_trips.py counts them). The adds are
        built by `JobAdder` (see bullmq_add). The scripts are sent with the first pipeline
        (SCRIPT LOAD ahead of the commands using them); if Redis lost them since (a
        restart, SCRIPT FLUSH) the NOSCRIPT error makes us send them again with the whole
        thing: marks and adds by job id are idempotent."""
        adder = self._adder(opts, high)
        by_batch: dict[str, list[str]] = {}
        for job in jobs:
            by_batch.setdefault(job.batch_id, []).append(job.job_id)
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            loads = 0 if self._scripts_loaded else 2
            if loads:
                pipe.script_load(self._mark_script.script)
                pipe.script_load(adder.lua)
            for batch_id, ids in by_batch.items():
                pipe.execute_command(
                    "EVALSHA",
                    self._mark_script.sha,
                    1,
                    self._pending_key(batch_id, high),
                    _PENDING_TTL_S,
                    *ids,
                )
            timestamp = round(time.time() * 1000)
            for job in jobs:
                pipe.execute_command(*adder.command(job.job_id, _job_data(job), timestamp))
            try:
                results = await pipe.execute()
            except NoScriptError:
                self._scripts_loaded = False
                if attempt:
                    raise
                continue
            self._scripts_loaded = True
            failed = [r for r in results[loads + len(by_batch) :] if isinstance(r, int) and r < 0]
            if failed:
                raise RuntimeError(f"bullmq refused a job (code {failed[0]})")
            return

    def _adder(self, opts: dict[str, Any], high: bool) -> JobAdder:
        """The JobAdder of a lane with `opts`: built once for the usual options."""
        if opts != self._job_opts:
            return JobAdder(self._high_queue if high else self._queue, JOB_NAME, opts)
        adder = self._adders.get(high)
        if adder is None:
            queue = self._high_queue if high else self._queue
            adder = self._adders[high] = JobAdder(queue, JOB_NAME, opts)
        return adder

    async def _mark_pending(self, jobs: Sequence[ChunkJob], high: bool) -> None:
        by_batch: dict[str, list[str]] = {}
        for job in jobs:
            by_batch.setdefault(job.batch_id, []).append(job.job_id)
        for batch_id, ids in by_batch.items():  # one batch, nearly always
            await self._mark_script(
                keys=[self._pending_key(batch_id, high)], args=[_PENDING_TTL_S, *ids]
            )

    async def _remove_finished(self, job_ids: list[str], high: bool) -> None:
        keys, queue = (self._high_keys, self._high_queue) if high else (self._keys, self._queue)
        pipe = self._client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.zscore(keys["completed"], job_id)
            pipe.zscore(keys["failed"], job_id)
        scores = await pipe.execute()
        for i, job_id in enumerate(job_ids):
            if scores[2 * i] is not None or scores[2 * i + 1] is not None:
                await queue.remove(job_id)

    async def pause_all(self, ms: int) -> None:
        if ms <= 0:
            return
        for keys in (self._keys, self._high_keys):
            await self._pause_script(
                keys=[keys["limiter"]], args=[int(ms), _PAUSED_VALUE, _LIMITER["max"]]
            )

    async def depth(self) -> int:
        count = 0
        for queue in (self._queue, self._high_queue):
            count += int(
                await queue.getJobCountByTypes(
                    "waiting", "paused", "prioritized", "delayed", "active"
                )
            )
        return count

    async def failed_count(self) -> int:
        """Jobs in bullmq's failed sets (bounded by keep_failed)."""
        count = 0
        for queue in (self._queue, self._high_queue):
            count += int(await queue.getJobCountByTypes("failed"))
        return count

    async def has_pending_for(self, batch_id: str) -> bool:
        for high, keys in ((False, self._keys), (True, self._high_keys)):
            found = await self._pending_script(
                keys=[self._pending_key(batch_id, high), keys["completed"], keys["failed"]],
                args=[keys[""], self._enqueue_window_ms, _PENDING_TTL_S],
            )
            if found:
                return True
        return False

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (aioredis.RedisError, OSError):
            return False

    async def check_server(self) -> list[str]:
        """Problems with the Redis server (version, eviction policy), each logged."""
        info = await self._client.info()
        problems: list[str] = []
        version = str(info.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_REDIS_VERSION:
            problems.append(f"Redis {version} is older than 6.2, which BullMQ needs")
        policy = info.get("maxmemory_policy")
        if policy != "noeviction":
            problems.append(f"Redis maxmemory-policy is {policy}; BullMQ needs noeviction")
        for problem in problems:
            log.warning("redis configuration", problem=problem)
        return problems

    # Worker side

    def _new_worker(self, name: str, handler: JobHandler, concurrency: int) -> _Worker:
        worker = _Worker(
            name,
            partial(self._process, handler),
            {
                "autorun": False,
                "connection": self._url,
                "prefix": self._prefix,
                "concurrency": max(1, concurrency),
                "limiter": _LIMITER,
                "lockDuration": self._lock_duration_ms,
                "stalledInterval": self._stalled_interval_ms,
                # A job whose workers keep dying is not failed for it: the database decides.
                "maxStalledCount": 10,
                "settings": {"backoffStrategy": _backoff_strategy},
            },
        )
        worker.on("error", lambda err, *_: log.error("bullmq worker error", error=repr(err)))
        # Gap (a): no read timeout on the connection that blocks in BZPOPMIN.
        blocking = worker.blockingRedisConnection.conn
        blocking.connection_pool.connection_kwargs["socket_timeout"] = None
        return worker

    async def run_worker(
        self, handler: JobHandler, *, concurrency: int, high_concurrency: int | None = None
    ) -> None:
        """A worker per lane: `concurrency` places for bulk jobs, `high_concurrency` (default
        the same) for the high lane's."""
        if self._worker is not None or self._starting:
            raise RuntimeError("this BullQueue already runs a worker")
        worker = self._new_worker(self._name, handler, concurrency)
        high = self._new_worker(self._name + HIGH_SUFFIX, handler, high_concurrency or concurrency)
        self._starting, self._stop_requested = True, False
        try:
            await self.check_server()
            # Gap (c): sub-second block timeouts depend on the server version.
            for w in (worker, high):
                await w.blockingRedisConnection.getRedisVersion()
                await w.redisConnection.getRedisVersion()
        except BaseException:
            for w in (worker, high):
                with contextlib.suppress(Exception):
                    await w.close(force=True)
            raise
        finally:
            self._starting = False
        if self._stop_requested:  # stop() came during the start-up
            await worker.close()
            await high.close()
            return
        self._worker, self._high_worker = worker, high
        try:
            await asyncio.gather(self._run(worker), self._run(high))
        finally:
            if self._worker is worker:
                self._worker = None
            if self._high_worker is high:
                self._high_worker = None

    @staticmethod
    async def _run(worker: _Worker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # This task was cancelled: running handlers were cancelled by run(); their
                # jobs come back through the stalled check when their locks expire.
                with contextlib.suppress(Exception):
                    await worker.close(force=True)
                raise
            if not worker.forceClosing:
                raise
            # Else run() re-raised the cancellation of handlers that stop() cut short.

    async def _process(self, handler: JobHandler, job: Any, token: str) -> None:
        data = job.data
        chunk = ChunkJob(
            str(data["b"]),
            int(data["s"]),
            int(data["e"]),
            str(data.get("t", "")),
            high=bool(data.get("h")),
        )
        ctx = JobContext(
            attempt=int(job.attemptsMade) + 1,
            max_attempts=int(job.opts.get("attempts") or self._attempts),
        )
        try:
            await handler(chunk, ctx)
        except DelayJob as exc:
            worker = self._high_worker if chunk.high else self._worker
            if worker is None or not worker.forceClosing:  # else stop() released it
                await job.moveToDelayed(round(time.time() * 1000) + max(0, exc.delay_ms), token)
            raise DelayedError() from None
        except Exception as exc:
            event = "job failed" if ctx.is_last_attempt else "job will retry"
            log.warning(event, job_id=chunk.job_id, attempt=ctx.attempt, error=repr(exc))
            raise

    async def stop(self, timeout: float) -> None:
        workers = [w for w in (self._worker, self._high_worker) if w is not None]
        if not workers:
            self._stop_requested = self._starting
            return
        await asyncio.gather(*(self._stop_one(w, timeout) for w in workers))
        if self._worker in workers:
            self._worker = None
        if self._high_worker in workers:
            self._high_worker = None

    @staticmethod
    async def _stop_one(worker: _Worker, timeout: float) -> None:
        closing = asyncio.ensure_future(worker.close())
        done, _ = await asyncio.wait({closing}, timeout=timeout)
        if not done:
            # Overran: nothing the handlers do from now on reaches Redis; their jobs go back
            # (delayed until now, attempt not used) for another worker, then we cancel them.
            worker.forceClosing = True
            now = round(time.time() * 1000)
            for job, token in list(worker.jobs):
                try:
                    await job.moveToDelayed(now, token)
                except Exception as exc:  # lock lost: the stalled check will recover it
                    log.warning("could not release job", job_id=job.id, error=repr(exc))
            worker.cancelProcessing()
            await closing

    async def close(self) -> None:
        await self.stop(0)
        await self._queue.close()
        await self._high_queue.close()
