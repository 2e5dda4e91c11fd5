"""The reference endpoints of bench/api: what an API request costs when nothing but the work
itself is done, measured on the same server process as the real endpoints.

`mailer api` mounts them only when MAILER_BENCH_REFERENCE names this file (bench/api sets
it; see mailer.app). They sit in front of mailer's middleware, routing and dependencies: a
bare ASGI app that authenticates with one cached lookup (a dict; the database on a miss) and
does the same database work as the real endpoint with raw asyncpg, then answers with orjson.

    GET  /_bench/ref/batches/{id}          the batch row; the in-flight counts when unfinished
    GET  /_bench/ref/batches/{id}/events   the batch exists, a count, a page of events
    GET  /_bench/ref/emails/{id}           a message (recipient, batch, version, template)
                                           with its events
    POST /_bench/ref/batches               one recipient: template + version, suppression
                                           check, one statement inserting batch, recipient
                                           and event; one Redis round trip (a job record)
    POST /_bench/ref/emails                one address, the same work (the template read
                                           takes the message's id too: it is in the answer)

The reference's batches are stored CANCELLED (nobody sends them) and its Redis records
expire: what counts is the work, not the result. No scope check, no rate limit, no
validation beyond what the JSON needs: the ratio of a real endpoint to its reference is
what mailer's layers cost on top of the same round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

PREFIX = "/_bench/ref/batches"
EMAILS = "/_bench/ref/emails/"
SEND = "/_bench/ref/emails"

_BATCH_SQL = "SELECT * FROM batches WHERE id = $1"
_IN_FLIGHT_SQL = """
SELECT status, count(*) FROM recipients
WHERE batch_id = $1 AND status IN ('SENDING', 'RETRYING') GROUP BY status
"""
_EXISTS_SQL = "SELECT 1 FROM batches WHERE id = $1"
_EVENT_COUNT_SQL = "SELECT count(*) FROM events WHERE batch_id = $1"
_EVENTS_SQL = """
SELECT id, type, email, recipient_id, batch_id, created_at, data::text AS data
FROM events WHERE batch_id = $1 ORDER BY id LIMIT $2 OFFSET $3
"""
_MESSAGE_SQL = """
SELECT r.id, r.status, r.email, r.provider_message_id, r.attempts, r.last_error, r.sent_at,
       r.updated_at, b.id AS batch_id, b.from_address, b.tags::text AS tags, b.created_at,
       b.template_id, t.inline, v.subject, v.version,
       e.id AS event_id, e.type AS event_type, e.email AS event_email,
       e.recipient_id AS event_recipient_id, e.batch_id AS event_batch_id,
       e.created_at AS event_created_at, e.data::text AS event_data
FROM recipients AS r
JOIN batches AS b ON b.id = r.batch_id
JOIN template_versions AS v ON v.id = b.template_version_id
JOIN templates AS t ON t.id = b.template_id
LEFT JOIN LATERAL (SELECT * FROM events WHERE recipient_id = r.id ORDER BY id) AS e ON true
WHERE r.id = $1
ORDER BY e.id
"""
_KEY_SQL = "SELECT id, scopes FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
_TEMPLATE_SQL = """
SELECT t.id, v.id AS version_id, v.variables::text AS variables
FROM templates t JOIN template_versions v ON v.id = t.current_version_id
WHERE t.id = $1 AND t.deleted_at IS NULL
"""
_EMAIL_TEMPLATE_SQL = """
SELECT t.id, v.id AS version_id, v.variables::text AS variables,
       nextval(pg_get_serial_sequence('recipients', 'id')) AS recipient_id
FROM templates t JOIN template_versions v ON v.id = t.current_version_id
WHERE t.id = $1 AND t.deleted_at IS NULL
"""
_SUPPRESSED_SQL = "SELECT email FROM suppressions WHERE email = ANY($1::text[])"
_INSERT_SQL = """
WITH b AS (
    INSERT INTO batches (id, template_id, template_version_id, status, metadata, tags,
        reply_to, unsubscribe, api_key_id, response, total_recipients, duplicate_count,
        suppressed_count, sent_count, failed_count, cancelled_count, delivered_count,
        bounced_count, complained_count, chunk_size, created_at, started_at, completed_at)
    VALUES ($1, $2, $3, 'CANCELLED', '{}', '{}', '[]', true, $4, $5::jsonb, 1, 0, 0, 0, 0,
        1, 0, 0, 0, 100, $6, $6, $6)
), r AS (
    INSERT INTO recipients (batch_id, seq, email, variables, status, attempts, updated_at)
    VALUES ($1, 0, $7, $8::jsonb, 'CANCELLED', 0, $6)
)
INSERT INTO events (batch_id, recipient_id, email, type, data, created_at)
VALUES ($1, NULL, NULL, 'QUEUED', $9::jsonb, $6)
"""
# The same with the recipient's id given ($10).
_INSERT_EMAIL_SQL = _INSERT_SQL.replace(
    "INSERT INTO recipients (batch_id,", "INSERT INTO recipients (id, batch_id,"
).replace("VALUES ($1, 0, $7,", "VALUES ($10, $1, 0, $7,")


async def _nothing_to_reset(_conn: asyncpg.Connection) -> None:
    return None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Reference:
    """ASGI middleware: answers PREFIX paths itself, passes everything else to `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.keys: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._seq = 0

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            async with self._lock:
                if self.pool is None:
                    dsn = os.environ["DATABASE_URL"].replace(
                        "postgresql+asyncpg://", "postgresql://"
                    )
                    size = int(os.environ.get("DB_POOL_SIZE", "10"))
                    # No reset on release (asyncpg's default is a round trip, RESET ALL
                    # and more): mailer's read pool skips it too, and the POST's
                    # statements leave no session state either.
                    self.pool = await asyncpg.create_pool(
                        dsn, min_size=size, max_size=size, reset=_nothing_to_reset
                    )
                    self.redis = aioredis.from_url(os.environ["REDIS_URL"])
        return self.pool

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith((PREFIX, SEND)):
            await self.app(scope, receive, send)
            return
        pool = await self._pool()
        status, body = 200, b""
        async with pool.acquire() as conn:
            key_id = await self._auth(conn, scope)
            if key_id is None:
                status, body = 401, b'{"error":{"code":"unauthorized"}}'
            elif scope["method"] == "POST":
                email = scope["path"] == SEND
                status, body = await self._post(conn, key_id, await _read_body(receive), email)
            elif scope["path"].startswith(EMAILS):
                status, body = await self._email(conn, scope["path"][len(EMAILS) :])
            else:
                rest = scope["path"][len(PREFIX) + 1 :]
                if rest.endswith("/events"):
                    status, body = await self._events(conn, rest[: -len("/events")])
                else:
                    status, body = await self._batch(conn, rest)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _auth(self, conn: asyncpg.Connection, scope: Any) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                digest = hashlib.sha256(value[7:].strip()).hexdigest()
                key_id = self.keys.get(digest)
                if key_id is None:
                    row = await conn.fetchrow(_KEY_SQL, digest)
                    if row is None:
                        return None
                    key_id = self.keys[digest] = row["id"]
                return key_id
        return None

    async def _batch(self, conn: asyncpg.Connection, batch_id: str) -> tuple[int, bytes]:
        row = await conn.fetchrow(_BATCH_SQL, batch_id)
        if row is None:
            return 404, b'{"error":{"code":"not_found"}}'
        done = row["sent_count"] + row["failed_count"] + row["suppressed_count"]
        in_flight: dict[str, int] = {}
        if row["status"] != "SCHEDULED" and row["total_recipients"] > done + row["cancelled_count"]:
            in_flight = dict(await conn.fetch(_IN_FLIGHT_SQL, batch_id))
        out = {
            "id": row["id"],
            "status": row["status"],
            "templateId": row["template_id"],
            "templateVersionId": row["template_version_id"],
            "metadata": orjson.loads(row["metadata"]),
            "tags": orjson.loads(row["tags"]),
            "from": row["from_address"],
            "replyTo": orjson.loads(row["reply_to"]),
            "unsubscribe": row["unsubscribe"],
            "sendAt": _iso(row["send_at"]),
            "createdAt": _iso(row["created_at"]),
            "startedAt": _iso(row["started_at"]),
            "completedAt": _iso(row["completed_at"]),
            "total": row["total_recipients"],
            "duplicates": row["duplicate_count"],
            "counts": {
                "SENDING": in_flight.get("SENDING", 0),
                "RETRYING": in_flight.get("RETRYING", 0),
                "SENT": row["sent_count"],
                "FAILED": row["failed_count"],
                "SUPPRESSED": row["suppressed_count"],
                "CANCELLED": row["cancelled_count"],
            },
        }
        return 200, orjson.dumps(out)

    async def _events(self, conn: asyncpg.Connection, batch_id: str) -> tuple[int, bytes]:
        if await conn.fetchval(_EXISTS_SQL, batch_id) is None:
            return 404, b'{"error":{"code":"not_found"}}'
        total = await conn.fetchval(_EVENT_COUNT_SQL, batch_id)
        rows = await conn.fetch(_EVENTS_SQL, batch_id, 100, 0)
        data = [
            {
                "id": r["id"],
                "type": r["type"],
                "email": r["email"],
                "recipientId": r["recipient_id"],
                "batchId": r["batch_id"],
                "createdAt": _iso(r["created_at"]),
                "data": orjson.loads(r["data"]),
            }
            for r in rows
        ]
        return 200, orjson.dumps({"data": data, "total": total, "limit": 100, "offset": 0})

    async def _email(self, conn: asyncpg.Connection, message_id: str) -> tuple[int, bytes]:
        rows = await conn.fetch(_MESSAGE_SQL, int(message_id))
        if not rows:
            return 404, b'{"error":{"code":"not_found"}}'
        m = rows[0]
        events = [
            {
                "id": r["event_id"],
                "type": r["event_type"],
                "email": r["event_email"],
                "recipientId": r["event_recipient_id"],
                "batchId": r["event_batch_id"],
                "createdAt": _iso(r["event_created_at"]),
                "data": orjson.loads(r["event_data"]),
            }
            for r in rows
            if r["event_id"] is not None
        ]
        delivered = next((e["createdAt"] for e in events if e["type"] == "DELIVERY"), None)
        out = {
            "id": str(m["id"]),
            "status": m["status"],
            "from": m["from_address"] or "bench@example.com",
            "to": m["email"],
            "subject": m["subject"],
            "batchId": m["batch_id"],
            "templateId": None if m["inline"] else m["template_id"],
            "templateVersion": None if m["inline"] else m["version"],
            "providerMessageId": m["provider_message_id"],
            "attempts": m["attempts"],
            "lastError": m["last_error"],
            "tags": orjson.loads(m["tags"]),
            "createdAt": _iso(m["created_at"]),
            "sentAt": _iso(m["sent_at"]),
            "deliveredAt": delivered,
            "updatedAt": _iso(m["updated_at"]),
            "events": events,
        }
        return 200, orjson.dumps(out)

    async def _post(
        self, conn: asyncpg.Connection, key_id: str, body: bytes, email: bool
    ) -> tuple[int, bytes]:
        """POST /batches with one recipient, or (`email`) POST /emails to one address."""
        request = orjson.loads(body)
        if email:
            recipient = {"email": request["to"], "variables": request.get("variables") or {}}
        else:
            recipient = request["recipients"][0]
        address = str(recipient["email"]).strip().lower()
        sql = _EMAIL_TEMPLATE_SQL if email else _TEMPLATE_SQL
        template = await conn.fetchrow(sql, request["template_id"])
        if template is None:
            return 422, b'{"error":{"code":"validation_error"}}'
        suppressed = await conn.fetch(_SUPPRESSED_SQL, [address])
        now = datetime.now(UTC)
        self._seq += 1
        batch_id = f"REF{os.getpid():08d}{self._seq:015d}"[:26]
        response: dict[str, Any]
        if email:
            held = "SUPPRESSED" if suppressed else "QUEUED"
            response = {"data": [{"id": str(template["recipient_id"]), "to": address}]}
            response["data"][0]["status"] = held
        else:
            response = {
                "id": batch_id,
                "status": "SENDING",
                "createdAt": _iso(now),
                "sendAt": None,
                "recipients": 1,
                "queued": 1 - len(suppressed),
                "suppressed": len(suppressed),
                "duplicates": 0,
            }
        args = [
            batch_id,
            template["id"],
            template["version_id"],
            key_id,
            orjson.dumps(response).decode(),
            now,
            address,
            orjson.dumps(recipient.get("variables") or {}).decode(),
            orjson.dumps({"recipients": 1, "scheduled": False}).decode(),
        ]
        if email:
            await conn.execute(_INSERT_EMAIL_SQL, *args, template["recipient_id"])
        else:
            await conn.execute(_INSERT_SQL, *args)
        assert self.redis is not None
        job = f"bench-ref:{batch_id}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(job, mapping={"b": batch_id, "s": 0, "e": 1, "t": int(time.time() * 1000)})
        pipe.expire(job, 60)
        await pipe.execute()
        return (202 if email else 201), orjson.dumps(response)


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def install(app: Any) -> None:
    """Called by mailer.app at build when MAILER_BENCH_REFERENCE names this file."""
    app.add_middleware(Reference)
