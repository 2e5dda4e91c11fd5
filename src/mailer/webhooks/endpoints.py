"""POST /webhooks/ses: SES notifications through SNS (signature-verified)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from mailer.deps import Session, State
from mailer.errors import MailerError
from mailer.metrics import get_metrics
from mailer.responses import JsonResponse
from mailer.webhooks.service import handle_webhook, topic_refusal
from mailer.webhooks.ses_events import SesMessageInvalid
from mailer.webhooks.sns import SnsError, load_json_object

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
    settings = state.settings
    if not settings.sns_topic_arns and not settings.sns_any_topic:
        # Production without SNS_TOPIC_ARNS: refused before the body is even read.
        raise MailerError(topic_refusal(settings, None), code="forbidden").with_status(403)
    metrics = get_metrics(state)
    try:
        data = load_json_object(await request.body())
        if settings.sns_verify and not ("Type" in data and "Signature" in data):
            raise MailerError(
                "Not a signed SNS message (SNS_VERIFY is on).", code="forbidden"
            ).with_status(403)
        outcome = await handle_webhook(
            session,
            data,
            settings=state.settings,
            verifier=state.sns_verifier,
            header_type=x_amz_sns_message_type,
            on_counts=metrics.observe_webhook_counts,
            on_event=metrics.observe_ses_event,
        )
    except SnsError as exc:
        status = getattr(exc, "status_code", 400)
        raise MailerError(str(exc), code=_STATUS_CODES.get(status, "bad_request")).with_status(
            status
        ) from None
    except SesMessageInvalid as exc:
        raise MailerError(str(exc), code="bad_request").with_status(400) from None
    return JsonResponse({"status": outcome.value})
