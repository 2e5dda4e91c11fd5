"""Templates through the blocking and the asyncio client, against the live server."""

from __future__ import annotations

import uuid

import pytest

from mailer_client import AsyncMailerClient, MailerClient, NotFoundError, Template, ValidationError


def _name() -> str:
    return f"tpl-{uuid.uuid4().hex[:10]}"


def test_create_get_update_render_delete(client: MailerClient) -> None:
    name = _name()
    created = client.templates.create(
        name,
        subject="Hello {{name}}",
        html="<p>Hi {{name}}</p>",
        variables={"name": {"type": "string"}},
    )
    assert isinstance(created, Template)
    assert (created.name, created.subject, created.version) == (name, "Hello {{name}}", 1)

    fetched = client.templates.get(created.id)
    assert fetched.id == created.id
    assert fetched.version_id == created.version_id
    assert fetched.created_at == created.created_at

    updated = client.templates.update(created.id, subject="Welcome {{name}}")
    assert updated.version == 2
    assert updated.version_id != created.version_id
    assert updated.html == "<p>Hi {{name}}</p>"  # left out: kept

    rendered = client.templates.render(created.id, {"name": "Ada"})
    assert rendered.subject == "Welcome Ada"
    assert rendered.html == "<p>Hi Ada</p>"
    assert rendered.text is not None and "Hi Ada" in rendered.text

    client.templates.delete(created.id)
    with pytest.raises(NotFoundError) as caught:
        client.templates.get(created.id)
    assert caught.value.status == 404
    assert caught.value.code == "not_found"
    assert created.id in caught.value.message


def test_used_variables_read_from_camel_case(client: MailerClient) -> None:
    created = client.templates.create(_name(), html="<p>{{first}} {{last}}</p>")
    assert sorted(created.used_variables) == ["first", "last"]


def test_invalid_template_is_a_validation_error_naming_the_field(client: MailerClient) -> None:
    with pytest.raises(ValidationError) as caught:
        client.templates.create("", html="<p>x</p>")
    error = caught.value
    assert error.status == 422
    assert error.code == "validation_error"
    assert "name" in error.fields
    assert error.details and all("message" in d for d in error.details)


def test_list_and_iterate_across_pages(client: MailerClient) -> None:
    made = {client.templates.create(_name(), html="<p>x</p>").id for _ in range(5)}
    page = client.templates.list(limit=2)
    assert len(page.data) == 2
    assert page.limit == 2 and page.offset == 0 and page.total >= 5
    seen = [t.id for t in client.templates.iter(page_size=2)]
    assert made <= set(seen)
    assert len(seen) == len(set(seen)) == client.templates.list(limit=1).total


async def test_async_templates(aclient: AsyncMailerClient) -> None:
    name = _name()
    created = await aclient.templates.create(name, subject="S {{x}}", html="<b>{{x}}</b>")
    assert (await aclient.templates.get(created.id)).name == name
    rendered = await aclient.templates.render(created.id, {"x": "1"})
    assert rendered.html == "<b>1</b>"
    ids = [t.id async for t in aclient.templates.iter(page_size=3)]
    assert created.id in ids
    assert len(ids) == len(set(ids))
    await aclient.templates.delete(created.id)
    with pytest.raises(NotFoundError):
        await aclient.templates.get(created.id)
