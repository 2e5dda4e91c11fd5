"""JSON responses serialized with orjson (datetimes as ISO 8601), and response models
written straight to JSON."""

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS)


class ModelResponse(Response):
    """A response model written to JSON by Pydantic (aliases, as FastAPI writes them).

    An endpoint that returns its model lets FastAPI validate it again against the route's
    `response_model` and then serialize it: ~0.1-0.2 ms a request, for a model the endpoint
    has just built and validated (bench/api, issue 18). Returning `ModelResponse(model)`
    sends the same JSON without that; keep `response_model=` on the route for OpenAPI."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        assert isinstance(content, BaseModel)
        return content.model_dump_json(by_alias=True).encode()
