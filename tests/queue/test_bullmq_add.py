"""JobAdder sends what bullmq's own add would send, and bullmq reads back what it added."""

from __future__ import annotations

from typing import Any

import pytest
from bullmq import Job

from mailer.queue.base import ChunkJob
from mailer.queue.bullmq import JOB_NAME, _job_data
from mailer.queue.bullmq_add import JobAdder
from tests.queue.helpers import MakeBull


class _Recorder:
    """Stands for a bullmq script: records the keys and arguments it is called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[Any]]] = []

    def __call__(self, *, keys: list[str], args: list[Any], client: Any = None) -> None:
        self.calls.append((keys, args))


@pytest.mark.parametrize("delay", [0, 1500])
@pytest.mark.parametrize(
    "chunk",
    [
        ChunkJob("01JBATCH0000000000000000AA", 0, 100),
        ChunkJob("01JBATCH0000000000000000AB", 100, 150, high=True, tag="r1"),
        ChunkJob("ünïcode-batch", 0, 1, tag="é"),
    ],
)
async def test_the_command_is_the_one_bullmq_builds(
    make_bull: MakeBull, chunk: ChunkJob, delay: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_bull(attempts=4, backoff_ms=250)
    lane = queue._high_queue if chunk.high else queue._queue
    opts = {**queue._job_opts, **({"delay": delay} if delay else {})}
    adder = JobAdder(lane, JOB_NAME, opts)

    scripts = lane.backend.scripts
    name = "addDelayedJob" if delay else "addStandardJob"
    assert adder.sha == scripts.commands[name].sha
    recorder = _Recorder()
    monkeypatch.setitem(scripts.commands, name, recorder)
    job = Job(lane, JOB_NAME, _job_data(chunk), {**lane.jobsOpts, **opts, "jobId": chunk.job_id})
    # What bullmq's Scripts.addJob sends for this job (it awaits the script's answer).
    if delay:
        scripts.addDelayedJob(job, job.opts.get("delay"))
    else:
        scripts.addStandardJob(job, job.timestamp)
    [(keys, args)] = recorder.calls

    command = adder.command(chunk.job_id, _job_data(chunk), job.timestamp)
    assert command[:3] == ("EVALSHA", adder.sha, len(keys))
    assert list(command[3 : 3 + len(keys)]) == keys
    assert list(command[3 + len(keys) :]) == args


@pytest.mark.parametrize("delay", [0, 60_000])
async def test_bullmq_reads_back_the_jobs_added(make_bull: MakeBull, delay: int) -> None:
    queue = make_bull(attempts=4, backoff_ms=250)
    chunks = [ChunkJob("read-back", 0, 10, tag="t"), ChunkJob("read-back", 10, 20, high=True)]
    await queue.enqueue(chunks, delay_ms=delay)
    for chunk in chunks:
        lane = queue._high_queue if chunk.high else queue._queue
        job = await Job.fromId(lane, chunk.job_id)
        assert job is not None
        assert (job.name, job.id, job.data) == (JOB_NAME, chunk.job_id, _job_data(chunk))
        assert job.opts["attempts"] == 4
        assert job.opts["backoff"] == queue._job_opts["backoff"]
        assert job.delay == delay
        state = await lane.getJobState(chunk.job_id)
        assert state == ("delayed" if delay else "waiting")
