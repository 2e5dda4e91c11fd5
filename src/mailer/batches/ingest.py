"""Parsing and validating a batch request body, fast.

A 100k-recipient body is decoded with orjson and checked in one tight loop (the compiled
address check first, email-validator only for unusual addresses) instead of building a
Pydantic object per recipient. Every failure is collected with its index; the first 100
are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from mailer.addresses import InvalidAddress, normalize_email
from mailer.batches.schemas import BatchOptions
from mailer.errors import BadRequest, ValidationFailed, validation_details
from mailer.templates.variables import VariableSpec, check_variables
from mailer.validation import nul_paths

MAX_REPORTED_ERRORS = 100
_RECIPIENT_KEYS = frozenset({"email", "variables"})


@dataclass(slots=True)
class ParsedRequest:
    options: BatchOptions
    raw_recipients: list[Any]
    may_contain_nul: bool = True


@dataclass(slots=True)
class CheckedRecipients:
    rows: list[tuple[str, dict[str, Any]]]  # (normalized email, variables), deduplicated
    duplicates: int


def parse_request(body: bytes, *, max_recipients: int) -> ParsedRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(
            f"The request body is not valid JSON: {exc}", code="malformed_json"
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed(
            "The request body must be a JSON object.",
            details=[{"field": "body", "message": "expected an object"}],
        )
    recipients = data.pop("recipients", None)
    problems: list[dict[str, Any]] = []
    if recipients is None:
        problems.append({"field": "recipients", "message": "Field required"})
    elif not isinstance(recipients, list):
        problems.append({"field": "recipients", "message": "must be an array"})
    elif not recipients:
        problems.append({"field": "recipients", "message": "must not be empty"})
    elif len(recipients) > max_recipients:
        problems.append(
            {
                "field": "recipients",
                "message": f"at most {max_recipients} recipients per batch "
                f"(MAX_BATCH_RECIPIENTS); got {len(recipients)}",
            }
        )
    try:
        options = BatchOptions.model_validate(data)
    except ValidationError as exc:
        problems.extend(validation_details(exc.errors()))
        options = None
    if problems or options is None:
        fields = ", ".join(p["field"] for p in problems[:5])
        raise ValidationFailed(f"The batch is not valid ({fields}).", details=problems)
    assert isinstance(recipients, list)
    return ParsedRequest(
        options=options, raw_recipients=recipients, may_contain_nul=b"\\u0000" in body
    )


def check_recipients(
    raw: list[Any], specs: Mapping[str, VariableSpec], *, has_nul: bool = True
) -> CheckedRecipients:
    """`has_nul=False` (the raw body had no \\u0000 escape) skips the NUL scan."""
    errors: list[dict[str, Any]] = []
    error_count = 0
    seen: dict[str, int] = {}
    rows: list[tuple[str, dict[str, Any]]] = []
    duplicates = 0

    def fail(index: int, field: str, message: str) -> None:
        nonlocal error_count
        error_count += 1
        if len(errors) < MAX_REPORTED_ERRORS:
            errors.append(
                {"index": index, "field": f"recipients[{index}].{field}", "message": message}
            )

    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            fail(index, "", "must be an object with 'email' and optional 'variables'")
            continue
        if not _RECIPIENT_KEYS.issuperset(item):
            extra = sorted(set(item) - _RECIPIENT_KEYS)
            fail(index, extra[0], "unknown field")
            continue
        email = item.get("email")
        if not isinstance(email, str):
            fail(index, "email", "Field required" if email is None else "must be a string")
            continue
        try:
            address = normalize_email(email)
        except InvalidAddress as exc:
            fail(index, "email", f"invalid address: {exc}")
            continue
        variables = item.get("variables")
        if variables is None:
            variables = {}
        elif not isinstance(variables, dict):
            fail(index, "variables", "must be an object")
            continue
        if specs:
            for name, problem in check_variables(specs, variables):
                fail(index, f"variables.{name}", problem)
        if has_nul:
            for where in nul_paths(variables, "variables"):
                fail(index, where, "NUL characters (\\u0000) are not allowed")
        if address in seen:
            duplicates += 1
            continue
        seen[address] = index
        rows.append((address, variables))

    if error_count:
        raise ValidationFailed(
            f"{error_count} recipient error(s); the batch was not created."
            + (
                f" The first {MAX_REPORTED_ERRORS} are listed."
                if error_count > MAX_REPORTED_ERRORS
                else ""
            ),
            details=errors,
        )
    return CheckedRecipients(rows=rows, duplicates=duplicates)
