"""POST /webhooks/ses: SES notifications through SNS (signature-verified)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Request

from mailer.deps import Session, State
from mailer.errors import MailerError
from mailer.metrics import get_metrics
from mailer.responses import JsonResponse
from mailer.webhooks.service import handle_webhook
from mailer.webhooks.ses_events import SesMessageInvalid
from mailer.webhooks.sns import SnsError

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

_STATUS_CODES = {400: "bad_request", 403: "forbidden", 502: "bad_gateway", 503: "unavailable"}


@router.post(
    "/ses",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "An SNS message (JSON sent as text/plain).",
        }
    },
    responses={400: {"description": "malformed"}, 403: {"description": "bad signature/topic"}},
)
async def ses_webhook(
    request: Request,
    session: Session,
    state: State,
    x_amz_sns_message_type: Annotated[str | None, Header()] = None,
) -> JsonResponse:
    body = await request.body()
    if state.settings.sns_verify and not _looks_signed(body):
        raise MailerError(
            "Not a signed SNS message (SNS_VERIFY is on).", code="forbidden"
        ).with_status(403)
    try:
        outcome = await handle_webhook(
            session,
            body,
            settings=state.settings,
            verifier=state.sns_verifier,
            header_type=x_amz_sns_message_type,
            on_counts=get_metrics(state).observe_webhook_counts,
        )
    except SnsError as exc:
        status = getattr(exc, "status_code", 400)
        raise MailerError(str(exc), code=_STATUS_CODES.get(status, "bad_request")).with_status(
            status
        ) from None
    except SesMessageInvalid as exc:
        raise MailerError(str(exc), code="bad_request").with_status(400) from None
    return JsonResponse({"status": outcome.value})


def _looks_signed(body: bytes) -> bool:
    """An SNS envelope has Type and Signature; anything else can't be verified."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return True  # let the parser report malformed JSON as 400
    return not isinstance(data, dict) or ("Type" in data and "Signature" in data)
