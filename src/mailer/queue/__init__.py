"""Job queue: BullMQ on Redis, or in-process.

The job types and the JobQueue protocol are in `mailer.queue.base`; the implementations in
`mailer.queue.bullmq` and `mailer.queue.local`; `mailer.queue.factory` builds one from the
settings; `mailer.queue.retry` holds the retry backoff. (The global send-rate limiter is the
worker's, in `mailer.delivery.send_rate`.)
"""
