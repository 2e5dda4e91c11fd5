"""/docs (Swagger UI) and /redoc work without internet access: every URL their HTML
references is on this server, and each one is served."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

# src="...", href="...", spec-url="...", and the JavaScript's url: '...' and '... + '/path'.
REFERENCES = re.compile(r"""(?:src|href|spec-url)="([^"]+)"|url:\s*'([^']+)'|\+\s*'(/[^']+)'""")


def referenced_urls(html: str) -> list[str]:
    return [next(group for group in match if group) for match in REFERENCES.findall(html)]


@pytest.mark.parametrize(
    ("page", "expected"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "openapi.json", "oauth2-redirect"}),
        ("/redoc", {"redoc.standalone.js", "openapi.json"}),
    ],
)
async def test_documentation_pages_use_only_their_own_assets(
    client: Any, page: str, expected: set[str]
) -> None:
    response = await client.http.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = referenced_urls(response.text)
    assert expected <= {url.rsplit("/", 1)[-1] for url in urls}, urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from elsewhere"
        assert url.startswith("/"), url
        asset = await client.http.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    # Nothing else on the page reaches out either (fonts, validator badges, CDNs).
    assert not re.search(r"https?://|//cdn|googleapis", response.text)


async def test_assets_have_their_content_types(client: Any) -> None:
    js = await client.http.get("/docs-assets/swagger-ui-bundle.js")
    css = await client.http.get("/docs-assets/swagger-ui.css")
    assert "javascript" in js.headers["content-type"]
    assert css.headers["content-type"].startswith("text/css")
    assert (await client.http.get("/docs-assets/nothing-here.js")).status_code == 404
