"""Garbage collection in the long-running processes (`mailer worker`, `mailer api`,
`mailer dev`).

Once a process has started, `freeze_startup_objects()` collects once and then moves every
object that exists (modules, SQLAlchemy and botocore metadata, settings, pools: about
170,000 objects in a worker) out of the cyclic collector's reach (`gc.freeze()`). The
collector's full collections walk every tracked object: measured in `bench/priority`, they
ran every ~0.75 s in a worker sending at full speed, took ~110 ms each and held its event
loop, so every send in flight waited (most of the transactional lane's p99). Frozen, a full
collection took ~11 ms.

Only the processes' entry points ask for it (`run_worker`, `create_server_app`, `mailer
dev`'s `create_app(freeze_gc=True)`), not `create_app()` by default: the tests build hundreds
of apps in one process, and frozen objects in reference cycles are never freed.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    gc.collect()  # startup's garbage goes now rather than being frozen
    gc.freeze()
