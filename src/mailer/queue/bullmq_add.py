"""The Redis command that adds one job to a bullmq queue, built here rather than through
bullmq's `Job` and `Scripts.addJob`.

bullmq builds a `Job` object, encodes its options and calls its script through redis-py's
`AsyncScript` for every job; for the one job of a small POST that came to ~60 µs of the
API's CPU above the same EVALSHA sent as a plain pipeline command (bench/api, issue 18:
~4 % of a single-recipient POST). Here the keys, the script's SHA and the options (all
but the job id) are computed once per queue, from bullmq itself, and each job costs a dict
copy, two msgpack calls and one JSON dump. `tests/queue/test_bullmq_add.py` checks the
arguments against those bullmq's own `Scripts.addStandardJob` / `addDelayedJob` send.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
from bullmq import Job, Queue
from bullmq.job import optsEncodeMap

# The KEYS of bullmq's add scripts, in the order its Scripts.addStandardJob and
# addDelayedJob pass them.
_STANDARD_KEYS = (
    "wait",
    "paused",
    "meta",
    "id",
    "completed",
    "delayed",
    "active",
    "events",
    "marker",
)
_DELAYED_KEYS = ("marker", "meta", "id", "delayed", "completed", "events")


class JobAdder:
    """The EVALSHA that adds a job named `name` with options `opts` (delayed if they hold
    a delay) to `queue`: `command(job_id, data, timestamp)`. The script must be loaded:
    `sha` and `lua` say which."""

    __slots__ = ("_delay", "_id_key", "_keys", "_name", "_opts", "_prefix", "lua", "sha")

    def __init__(self, queue: Queue, name: str, opts: dict[str, Any]) -> None:
        scripts = queue.backend.scripts
        template = Job(queue, name, None, {**queue.jobsOpts, **opts, "jobId": "-"})
        delay = template.opts.get("delay") or 0
        delayed = delay > 0
        # The script's last argument: the job's timestamp, or for a delayed job its delay
        # (as bullmq's Scripts.addJob passes them).
        self._delay: int | None = delay if delayed else None
        script = scripts.commands["addDelayedJob" if delayed else "addStandardJob"]
        self.sha: str = script.sha
        self.lua: str = script.script
        self._keys: list[str] = scripts.getKeys(list(_DELAYED_KEYS if delayed else _STANDARD_KEYS))
        self._prefix: str = scripts.keys[""]
        self._name = name
        self._opts: dict[str, Any] = scripts.encodeOpts(template.opts)
        self._id_key: str = optsEncodeMap.get("jobId", "jobId")

    def command(self, job_id: str, data: dict[str, Any], timestamp: int) -> tuple[Any, ...]:
        opts = dict(self._opts)
        opts[self._id_key] = job_id
        # ARGV[1]: prefix, custom id, name, timestamp, parent key, parent dependencies key,
        # parent, repeat job key, deduplication key (none of the last five here).
        packed = msgpack.packb(
            [self._prefix, job_id, self._name, timestamp, None, None, None, None, None],
            use_bin_type=True,
        )
        return (
            "EVALSHA",
            self.sha,
            len(self._keys),
            *self._keys,
            packed,
            json.dumps(data, separators=(",", ":"), allow_nan=False),
            msgpack.packb(opts),
            timestamp if self._delay is None else self._delay,
        )
