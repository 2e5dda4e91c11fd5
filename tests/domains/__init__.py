"""Helpers for the domain tests.

`SesIdentityServer`: a small SES-v2-like HTTP server for email identities (aiohttp on
127.0.0.1, random port, own thread), reached by the real aiobotocore client through
endpoint_url. moto's sesv2 returns no Easy DKIM tokens and has no MAIL FROM operation,
so the token and MAIL FROM paths are tested against this server (and identity creation
also against moto). It implements GetEmailIdentity, CreateEmailIdentity and
PutEmailIdentityMailFromAttributes in the rest-json format botocore parses.
"""

from __future__ import annotations

import asyncio
import secrets
import string
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fixtures.ses_server import SES_ACCESS_KEY, SES_REGION, SES_SECRET_KEY

SES_ENV = {
    "MAIL_TRANSPORT": "ses",
    "AWS_REGION": SES_REGION,
    "AWS_ACCESS_KEY_ID": SES_ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SES_SECRET_KEY,
}


@dataclass
class FakeIdentity:
    tokens: list[str]
    verified: bool = False
    mail_from: str | None = None
    behavior: str | None = None


@dataclass
class SesIdentityServer:
    host: str = "127.0.0.1"
    port: int = 0
    identities: dict[str, FakeIdentity] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, identity)
    reject_mail_from: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def operations(self, name: str) -> list[str]:
        with self._lock:
            return [identity for op, identity in self.calls if op == name]

    def _record(self, operation: str, identity: str) -> None:
        with self._lock:
            self.calls.append((operation, identity))

    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["identity"]
        self._record("GetEmailIdentity", name)
        identity = self.identities.get(name)
        if identity is None:
            return _error(404, "NotFoundException", f"Email identity {name} does not exist.")
        body: dict[str, Any] = {
            "IdentityType": "DOMAIN",
            "VerifiedForSendingStatus": identity.verified,
            "VerificationStatus": "SUCCESS" if identity.verified else "PENDING",
            "DkimAttributes": {
                "SigningEnabled": True,
                "Status": "SUCCESS" if identity.verified else "PENDING",
                "Tokens": identity.tokens,
                "SigningAttributesOrigin": "AWS_SES",
            },
        }
        if identity.mail_from:
            body["MailFromAttributes"] = {
                "MailFromDomain": identity.mail_from,
                "MailFromDomainStatus": "PENDING",
                "BehaviorOnMxFailure": identity.behavior,
            }
        return web.json_response(body)

    async def _create(self, request: web.Request) -> web.Response:
        payload = await request.json()
        name = payload["EmailIdentity"]
        self._record("CreateEmailIdentity", name)
        if name in self.identities:
            return _error(400, "AlreadyExistsException", f"{name} already exists.")
        alphabet = string.ascii_lowercase + string.digits
        tokens = ["".join(secrets.choice(alphabet) for _ in range(32)) for _ in range(3)]
        self.identities[name] = FakeIdentity(tokens=tokens)
        return web.json_response(
            {
                "IdentityType": "DOMAIN",
                "VerifiedForSendingStatus": False,
                "DkimAttributes": {"SigningEnabled": True, "Status": "PENDING", "Tokens": tokens},
            }
        )

    async def _put_mail_from(self, request: web.Request) -> web.Response:
        name = request.match_info["identity"]
        payload = await request.json()
        self._record("PutEmailIdentityMailFromAttributes", name)
        identity = self.identities.get(name)
        if identity is None:
            return _error(404, "NotFoundException", f"Email identity {name} does not exist.")
        if self.reject_mail_from:
            return _error(400, "BadRequestException", "Invalid MAIL FROM domain.")
        identity.mail_from = payload.get("MailFromDomain")
        identity.behavior = payload.get("BehaviorOnMxFailure")
        return web.json_response({})

    def start(self) -> SesIdentityServer:
        app = web.Application()
        app.router.add_get("/v2/email/identities/{identity}", self._get)
        app.router.add_post("/v2/email/identities", self._create)
        app.router.add_put("/v2/email/identities/{identity}/mail-from", self._put_mail_from)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, self.host, 0).start()
            self._runner = runner
            self.port = runner.addresses[0][1]

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(serve())
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="ses-identity-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("SES identity server did not start")
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> SesIdentityServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message}, status=status, headers={"x-amzn-ErrorType": code}
    )


def zone_from_records(records: list[Any]) -> dict[str, dict[str, list[str]]]:
    """A DNS test zone publishing DnsRecord objects as `mailer domain setup` printed them."""
    zone: dict[str, dict[str, list[str]]] = {}
    for record in records:
        zone.setdefault(record.name, {}).setdefault(record.type, []).append(record.value)
    return zone
