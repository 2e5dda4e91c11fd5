"""Which variables a template reads (templates.usage)."""

from __future__ import annotations

import pytest

from mailer.templates.usage import find_variables, used_names


def names(html: str) -> list[str]:
    return used_names(find_variables("", html, None))


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Hi {{first_name}}</p>", ["first_name"]),
        ("{{{raw}}} {{a.b.c}} {{this.d}} {{./e}}", ["raw", "a", "d", "e"]),
        ("{{#if vip}}{{discount}}{{else}}{{price}}{{/if}}", ["vip", "discount", "price"]),
        ("{{#unless x}}{{y}}{{/unless}}", ["x", "y"]),
        # inside #each/#with the context is the item: its names are not variables
        ("{{#each items}}{{name}} {{@index}} {{../title}}{{/each}}", ["items", "title"]),
        ("{{#each items}}{{name}}{{else}}{{empty}}{{/each}}", ["items", "empty"]),
        ("{{#with user}}{{name}}{{@root.site}}{{/with}}", ["user", "site"]),
        (
            "{{#section}}{{inner}}{{/section}}{{^none}}{{shown}}{{/none}}",
            ["section", "none", "shown"],
        ),
        ("{{lookup table key}} {{#with (lookup a b)}}{{c}}{{/with}}", ["table", "key", "a", "b"]),
        ("{{! a comment {{x}} }} {{{{raw}}}}{{y}}{{{{/raw}}}}", []),
        ("{{unsubscribe_url}} {{{unsubscribe_url}}}", ["unsubscribe_url"]),
    ],
)
def test_names(html: str, expected: list[str]) -> None:
    assert names(html) == expected


def test_positions_name_part_line_and_column() -> None:
    uses = find_variables("Hi {{name}}", "<p>\n  {{first}}</p>", "{{#each xs}}{{y}}{{/each}}")
    assert [(u.name, u.part, u.line, u.column) for u in uses] == [
        ("name", "subject", 1, 4),
        ("first", "html", 2, 3),
        ("xs", "text", 1, 1),
    ]
    assert uses[1].where() == "html line 2, column 3"
