"""OpenAPI additions: every error an operation can answer, in mailer's one error format, and
the bearer key scheme (so /docs can authorize and clients know which routes need a key).

FastAPI documents only the success status and its own 422 shape; mailer answers errors as
`{"error": {"code", "message", "details"}}` with 400/401/403/404/409/413/415/422/429/503.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = "ErrorResponse"
SECURITY_SCHEME = "bearerAuth"
_API = "/api/v1"
# Routes without an API key (the security matrix test lists them too).
_PUBLIC = (f"{_API}/health", f"{_API}/ready", f"{_API}/webhooks/", f"{_API}/unsubscribe/")
# Public unless METRICS_REQUIRE_KEY is set.
_METRICS = ("/metrics", f"{_API}/metrics")
_HTML = (f"{_API}/unsubscribe/",)
_METHODS = ("get", "post", "put", "patch", "delete")
# Operations whose body names another resource (POST /batches: the template).
_NAMES_A_RESOURCE = {("post", f"{_API}/batches")}
# Links (OpenAPI 3 `links`): the id a create answers with is the path parameter of these
# operations. They document the API and let stateful testing chain calls.
_LINKS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        f"{_API}/templates",
        "template_id",
        "201",
        [
            ("get", f"{_API}/templates/{{template_id}}"),
            ("put", f"{_API}/templates/{{template_id}}"),
            ("post", f"{_API}/templates/{{template_id}}/render"),
            ("delete", f"{_API}/templates/{{template_id}}"),
        ],
    ),
    (
        f"{_API}/batches",
        "batch_id",
        "201",
        [
            ("get", f"{_API}/batches/{{batch_id}}"),
            ("get", f"{_API}/batches/{{batch_id}}/events"),
            ("get", f"{_API}/batches/{{batch_id}}/summary"),
            ("post", f"{_API}/batches/{{batch_id}}/cancel"),
        ],
    ),
    (f"{_API}/admin/keys", "key_id", "201", [("post", f"{_API}/admin/keys/{{key_id}}/revoke")]),
]
_DESCRIPTIONS = {
    400: "Malformed request (e.g. the body is not valid JSON)",
    401: "Missing, invalid or revoked API key",
    403: "The API key lacks the scope this route needs",
    404: "No such resource",
    409: "Conflict with the resource's current state",
    413: "Request body larger than MAX_BODY_BYTES",
    415: "Body is not JSON",
    422: "Validation failed; `details` names each field",
    429: "Per-key rate limit exceeded; see Retry-After",
    503: "A backing service (database, queue) is unavailable; retry shortly",
}
_ERROR_BODY: dict[str, Any] = {
    "title": ERROR_SCHEMA,
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {}},
            },
        }
    },
}


def _statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    statuses = {422, 503}
    has_body = "requestBody" in operation or method in ("post", "put", "patch")
    if "{" in path or (method, path) in _NAMES_A_RESOURCE:
        statuses.add(404)
    if has_body:
        statuses |= {400, 413}
        if not path.startswith((f"{_API}/webhooks/", *_HTML)):
            statuses.add(415)
    if path.startswith(_METRICS):
        statuses |= {401, 403}
    elif path.startswith(_API) and not path.startswith(_PUBLIC):
        statuses |= {401, 403, 429}
        if has_body or method == "delete":
            statuses.add(409)
    return statuses


def _is_fastapi_default(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return str(schema.get("$ref", "")).endswith("/HTTPValidationError")


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses and the security scheme to an OpenAPI document in place."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA] = _ERROR_BODY
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <64 hex characters>`",
    }
    error_content = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}
    }
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            if path.startswith(_API) and not path.startswith(_PUBLIC):
                operation["security"] = [{SECURITY_SCHEME: []}]
            responses = operation.setdefault("responses", {})
            for status in sorted(_statuses(path, method, operation)):
                existing = responses.get(str(status))
                if existing is not None and not _is_fastapi_default(existing):
                    if "content" not in existing and path != f"{_API}/ready":
                        existing["content"] = error_content  # declared with a description only
                    continue
                content: dict[str, Any] = error_content
                if path.startswith(_HTML) and status in (400, 404):
                    content = {"text/html": {"schema": {"type": "string"}}}
                responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": content}
    _add_links(schema)
    return schema


def _add_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for source, parameter, status, targets in _LINKS:
        response = paths.get(source, {}).get("post", {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for method, target in targets:
            operation_id = paths.get(target, {}).get(method, {}).get("operationId")
            if operation_id:
                links[operation_id] = {
                    "operationId": operation_id,
                    "parameters": {parameter: "$response.body#/id"},
                }
