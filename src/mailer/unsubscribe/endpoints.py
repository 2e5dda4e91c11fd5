"""GET/POST /unsubscribe/{token}: RFC 8058 one-click unsubscribe. No auth, no redirects, no
cookies; GET only shows a confirmation page and changes nothing."""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailer.deps import Session, State
from mailer.unsubscribe import service

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;
color:#222}}button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #444;
background:#222;color:#fff;cursor:pointer}}</style></head>
<body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body),
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


_NOT_FOUND = (
    "Unsubscribe link not found",
    "<p>This unsubscribe link is not valid. Copy the whole link from the message.</p>",
)


@router.get("/{token}", response_class=HTMLResponse)
async def confirm_page(token: str, session: Session, state: State) -> HTMLResponse:
    """A page with a button; nothing changes until it is pressed (scanners follow GETs)."""
    recipient = await service.recipient_for_token(session, token, state.settings.unsubscribe_key)
    if recipient is None:
        return _page(*_NOT_FOUND, status=404)
    body = (
        f"<p>Stop sending email to <strong>{html.escape(recipient.email)}</strong>?</p>"
        f'<form method="post" action="{html.escape(token)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", body)


@router.post("/{token}", response_class=HTMLResponse)
async def one_click(token: str, request: Request, session: Session, state: State) -> HTMLResponse:
    """RFC 8058: body `List-Unsubscribe=One-Click` (form-urlencoded or multipart)."""
    recipient = await service.recipient_for_token(session, token, state.settings.unsubscribe_key)
    if recipient is None:
        return _page(*_NOT_FOUND, status=404)
    try:
        form = await request.form()
    except Exception:  # malformed multipart and the like
        form = None
    if form is None or form.get("List-Unsubscribe") != "One-Click":
        return _page(
            "Unsubscribe",
            "<p>Send <code>List-Unsubscribe=One-Click</code> to unsubscribe.</p>",
            status=400,
        )
    await service.unsubscribe(session, recipient)
    return _page("Unsubscribed", "<p>You will not receive these emails any more.</p>")
