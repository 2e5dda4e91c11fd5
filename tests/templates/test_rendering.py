"""The template engine: Handlebars constructs, escaping per part, hostile templates and data,
syntax errors with positions, bounds, the compiled-template cache and derive_text."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pybars import Compiler

from mailer.templates import rendering
from mailer.templates.rendering import (
    CompiledTemplate,
    RenderedMessage,
    TemplateRenderError,
    TemplateSyntaxError,
    clear_compiled_cache,
    compiled,
    derive_text,
    get_compiled,
    scanner,
)


def render(source: str, data: dict[str, Any] | None = None, part: str = "html", **kw: Any) -> str:
    parts: dict[str, Any] = {"subject": "", "html": None, "text": None, part: source}
    rendered = CompiledTemplate.compile(**parts, **kw).render(data or {})
    result = getattr(rendered, part)
    assert isinstance(result, str)
    return result


def syntax_error(source: str, part: str = "html") -> TemplateSyntaxError:
    parts: dict[str, Any] = {"subject": "", "html": None, "text": None, part: source}
    with pytest.raises(TemplateSyntaxError) as info:
        CompiledTemplate.compile(**parts)
    return info.value


def render_error(source: str, data: dict[str, Any], **kw: Any) -> TemplateRenderError:
    with pytest.raises(TemplateRenderError) as info:
        render(source, data, **kw)
    return info.value


# --------------------------------------------------------------------------- constructs

DATA: dict[str, Any] = {
    "name": "Jane",
    "user": {"first": "Ada", "address": {"city": "Paris"}, "tags": ["x", "y"]},
    "items": ["a", "b", "c"],
    "people": [{"name": "P1", "age": 1}, {"name": "P2", "age": 2}],
    "prices": {"tea": 2, "coffee": 3},
    "empty": [],
    "yes": True,
    "no": False,
    "zero": 0,
    "title": "T",
    "spaced key": "sk",
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Hello {{name}}!", "Hello Jane!"),
        ("{{ name }}", "Jane"),
        ("{{{name}}} {{&name}}", "Jane Jane"),
        ("{{user.first}} {{user.address.city}} {{user/address/city}}", "Ada Paris Paris"),
        ("{{this.name}} {{./name}}", "Jane Jane"),
        ("{{items.1}} {{items.[2]}} {{user.tags.0}} {{items.length}}", "b c x 3"),
        ("{{[spaced key]}}", "sk"),
        ("{{missing}}|{{missing.deeper.still}}|{{items.9}}", "||"),
        ("{{#if yes}}Y{{else}}N{{/if}} {{#if no}}Y{{else}}N{{/if}}", "Y N"),
        ("{{#if yes}}only{{/if}}{{#if no}}never{{/if}}", "only"),
        ("{{#unless no}}U{{else}}E{{/unless}} {{#unless yes}}U{{else}}E{{/unless}}", "U E"),
        ("{{#each items}}{{this}}{{@index}}{{/each}}", "a0b1c2"),
        ("{{#each items}}{{#if @first}}[{{/if}}{{.}}{{#if @last}}]{{/if}}{{/each}}", "[abc]"),
        ("{{#each people}}{{name}}={{age}};{{/each}}", "P1=1;P2=2;"),
        ("{{#each prices}}{{@key}}:{{this}}@{{@index}} {{/each}}", "tea:2@0 coffee:3@1 "),
        ("{{#each empty}}x{{else}}none{{/each}}", "none"),
        ("{{#each missing}}x{{^}}none{{/each}}", "none"),
        ("{{#each people}}{{name}}/{{../title}}/{{@root.name}} {{/each}}", "P1/T/Jane P2/T/Jane "),
        (
            "{{#each people}}{{#each ../items}}{{@../index}}{{@index}} {{/each}}{{/each}}",
            "00 01 02 10 11 12 ",
        ),
        (
            "{{#with user}}{{first}} in {{address.city}} ({{../name}}){{/with}}",
            "Ada in Paris (Jane)",
        ),
        ("{{#with missing}}x{{else}}no user{{/with}}", "no user"),
        ("{{#each items}}{{#with ../user}}{{first}}{{@index}}{{/with}}{{/each}}", "Ada0Ada1Ada2"),
        ("{{lookup prices 'tea'}} {{lookup items 1}} {{lookup user \"first\"}}", "2 b Ada"),
        ("{{#each items}}{{lookup ../people @index}}{{/each}}", "[object Object][object Object]"),
        ("{{lookup (lookup people 1) 'name'}}", "P2"),
        ("{{#each items}}{{lookup (lookup ../people @index) 'name'}} {{/each}}", "P1 P2  "),
        ("{{#user}}{{first}}{{/user}} {{#yes}}T{{/yes}} {{#no}}x{{else}}F{{/no}}", "Ada T F"),
        ("{{#items}}{{this}}{{/items}} {{#empty}}x{{else}}empty{{/empty}}", "abc empty"),
        ("{{^empty}}E{{/empty}}{{^items}}I{{else}}i{{/items}}{{^zero}}Z{{else}}z{{/zero}}", "Eiz"),
        ("{{^if no}}inverted if{{/if}}", "inverted if"),
        ("a{{! a comment }}b{{!-- another --}}c", "abc"),
        ("{{{{raw}}}}{{name}} {{#if}}{{{{/raw}}}}", "{{name}} {{#if}}"),
        ("a  {{~name~}}  b", "aJaneb"),
        (
            "<ul>\n  {{#each items}}\n  <li>{{this}}</li>\n  {{/each}}\n</ul>",
            "<ul>\n  <li>a</li>\n  <li>b</li>\n  <li>c</li>\n</ul>",
        ),
    ],
)
def test_constructs(source: str, expected: str) -> None:
    assert render(source, DATA) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (3, "3"),
        (3.0, "3"),
        (2.5, "2.5"),
        (-0.0, "0"),
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ([1, "a", None, [2, 3], True], "1,a,,2,3,true"),
        ({"a": 1}, "[object Object]"),
        ({}, "[object Object]"),
    ],
)
def test_values_render_like_handlebars_js(value: Any, expected: str) -> None:
    assert render("{{v}}", {"v": value}) == expected


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (True, True),
        (False, False),
        (None, False),
        (0, False),
        (0.0, False),
        (float("nan"), False),
        (1, True),
        (-1.5, True),
        ("", False),
        ("0", True),
        ("false", True),
        ([], False),
        ([0], True),
        ({}, True),
        ({"a": 1}, True),
    ],
)
def test_if_truthiness_follows_handlebars(value: Any, truthy: bool) -> None:
    expected = "yes" if truthy else "no"
    assert render("{{#if v}}yes{{else}}no{{/if}}", {"v": value}) == expected
    assert render("{{#unless v}}no{{else}}yes{{/unless}}", {"v": value}) == expected


def test_with_renders_zero_but_not_empty_values() -> None:
    source = "{{#with v}}[{{this}}]{{else}}empty{{/with}}"
    assert render(source, {"v": 0}) == "[0]"
    assert render(source, {"v": ""}) == "empty"
    assert render(source, {"v": []}) == "empty"
    assert render(source, {"v": {}}) == "[[object Object]]"


def test_missing_variables_render_empty_in_every_part() -> None:
    compiled = CompiledTemplate.compile(
        subject="Hi {{name}}", html="<p>{{name}}</p>", text="{{x.y}}"
    )
    assert compiled.render({}) == RenderedMessage(subject="Hi ", html="<p></p>", text="")


def test_render_accepts_any_mapping_and_absent_parts() -> None:
    from types import MappingProxyType

    compiled = CompiledTemplate.compile(subject="{{a}}", html=None, text="t{{a}}")
    assert compiled.render(MappingProxyType({"a": "1"})) == RenderedMessage("1", None, "t1")
    assert compiled.has_text
    assert not compiled.has_html


def test_string_literal_arguments_are_decoded() -> None:
    data = {"m": {'say "hi"': 1, "it's": 2, "back\\slash": 3, "line\nbreak": 4}}
    assert render('{{lookup m "say \\"hi\\""}}', data) == "1"
    assert render("{{lookup m 'it\\'s'}}", data) == "2"
    assert render('{{lookup m "back\\slash"}}', data) == "3"
    assert render('{{lookup m "line\nbreak"}}', data) == "4"


# --------------------------------------------------------------------------- escaping

HOSTILE_TEXT = "<b>&\"'`=</b>"


def test_html_part_escapes_double_stash_only() -> None:
    compiled = CompiledTemplate.compile(
        subject="{{x}} {{{x}}}", html="{{x}}|{{{x}}}|{{&x}}", text="{{x}} {{{x}}}"
    )
    rendered = compiled.render({"x": HOSTILE_TEXT})
    assert rendered.html == (
        "&lt;b&gt;&amp;&quot;&#x27;&#x60;&#x3D;&lt;/b&gt;|" + HOSTILE_TEXT + "|" + HOSTILE_TEXT
    )
    assert rendered.subject == f"{HOSTILE_TEXT} {HOSTILE_TEXT}"
    assert rendered.text == f"{HOSTILE_TEXT} {HOSTILE_TEXT}"


def test_escaping_applies_to_every_value_source() -> None:
    data = {"items": ["<i>"], "m": {"k": "<k>"}, "o": {"p": "<p>"}}
    source = "{{#each items}}{{this}}{{/each}} {{lookup m 'k'}} {{#with o}}{{p}}{{/with}} {{items}}"
    assert render(source, data) == "&lt;i&gt; &lt;k&gt; &lt;p&gt; &lt;i&gt;"
    assert render(source, data, part="text") == "<i> <k> <p> <i>"


def test_template_literal_text_is_never_escaped() -> None:
    assert render("<a href='x'>&amp;</a>") == "<a href='x'>&amp;</a>"


# --------------------------------------------------------------------------- hostile input


class Secret:
    calls = 0

    def __init__(self) -> None:
        self.password = "s3cret"

    def __str__(self) -> str:
        return "s3cret"

    def __call__(self, *args: Any) -> str:
        Secret.calls += 1
        return "called"

    def keys(self) -> list[str]:
        return ["password"]

    def __getitem__(self, key: str) -> str:
        return "s3cret"


@pytest.mark.parametrize(
    "source",
    [
        "{{name.__class__}}",
        "{{name.upper}}",
        "{{name.__len__}}",
        "{{this.__class__.__mro__}}",
        "{{this.__init__.__globals__}}",
        "{{__class__}}",
        "{{[__class__]}}",
        "{{lookup this '__class__'}}",
        "{{lookup name '__class__'}}",
        "{{lookup (lookup this '__class__') '__name__'}}",
        "{{#with name.__class__}}{{__name__}}{{/with}}",
        "{{#with name}}{{this.__class__}}{{/with}}",
        "{{#each name.__class__.__mro__}}{{__name__}}{{/each}}",
        "{{@root.__dict__}}",
        "{{@root.__class__.__init__.__globals__}}",
        "{{@root.items}}",
        "{{@root.keys}}",
        "{{@root.get}}",
        "{{@_parent}}",
        "{{list.__class__}} {{list.pop}} {{list.append}}",
        "{{#each list}}{{this.__class__}}{{/each}}",
        "{{obj}} {{obj.password}} {{obj.__dict__}} {{lookup obj 'password'}}",
        "{{#with obj}}{{password}}{{this}}{{/with}}{{#each obj}}{{this}}{{/each}}",
        "{{#obj}}{{password}}{{/obj}}{{#if obj}}{{obj.password}}{{/if}}",
        "{{fn}} {{#if fn}}{{/if}}{{#fn}}{{/fn}}{{#with fn}}{{this}}{{/with}}",
        "{{list.1}} {{list.1.password}} {{nested.inner}} {{nested.inner.password}}",
        "{{@index}}{{@key}}{{@first}}{{@root.@root}}",
    ],
)
def test_rendering_never_reaches_python_internals(source: str) -> None:
    Secret.calls = 0
    data = {
        "name": "Jane",
        "list": [1, Secret()],
        "obj": Secret(),
        "fn": Secret(),
        "nested": {"inner": Secret()},
    }
    out = render(source, data) + render(source, data, part="text")
    assert "s3cret" not in out
    assert "class" not in out
    assert "<" not in out  # no Python reprs such as <built-in method ...>
    assert "str" not in out
    assert "called" not in out
    assert Secret.calls == 0


def test_python_objects_in_data_render_empty() -> None:
    data = {"o": Secret(), "t": ("a", Secret()), "s": {1, 2}, "b": b"bytes"}
    assert render("[{{o}}][{{t}}][{{s}}][{{b}}]", data) == "[][a,][][]"


def test_bracket_segments_cannot_inject_code() -> None:
    # pybars3's own code generator pastes this segment into generated Python source.
    marker = "mailer_template_injection_marker"
    payload = f"{{{{[x')or __import__('sys').modules.__setitem__('{marker}', 1)or(']}}}}"
    assert render(payload, {"x": {}}) == ""
    assert render("{{a." + payload[2:], {"a": {}}) == ""
    assert marker not in sys.modules


def test_dict_keys_that_look_like_data_variables_stay_data() -> None:
    data = {"@index": "leak", "@root": "leak", "items": [{"@key": "leak"}]}
    assert render("{{@index}}{{#each items}}{{@key}}{{/each}}", data) == ""
    assert render("{{[@index]}}", data) == ""


# --------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("source", "line", "column", "message"),
    [
        ("{{#if a}}x", 1, 1, "{{#if}} is never closed"),
        ("{{#each items}}\n  {{#if a}}x\n{{/each}}", 3, 1, "{{/each}} does not match"),
        ("ok\n{{/if}}", 2, 1, "closes no open block"),
        ("x\n\n  {{else}}", 3, 3, "{{else}} outside a block"),
        ("{{^}}", 1, 1, "{{else}} outside a block"),
        ("{{#if a}}{{else if b}}{{/if}}", 1, 10, "{{else if ...}} is not supported"),
        ("a {{foo bar}}", 1, 3, "unknown helper 'foo'"),
        ("{{a.b c}}", 1, 1, "unknown helper 'a.b'"),
        ("{{#foo bar}}{{/foo}}", 1, 1, "unknown block helper 'foo'"),
        ("{{lookup a (foo b) 'c'}}", 1, 1, "lookup takes exactly two arguments"),
        ("{{lookup a (foo b)}}", 1, 1, "unknown helper 'foo' in a subexpression"),
        ("{{lookup a}}", 1, 1, "lookup takes exactly two arguments"),
        ("{{#lookup a b}}{{/lookup}}", 1, 1, "{{#lookup}} is not a block helper"),
        ("{{#if}}x{{/if}}", 1, 1, "{{#if}} takes exactly one argument"),
        ("{{#each a b}}{{/each}}", 1, 1, "{{#each}} takes exactly one argument"),
        ("{{#with a b}}{{/with}}", 1, 1, "{{#with}} takes exactly one argument"),
        ("{{if}}", 1, 1, "{{if}} can only be used as a block"),
        ("x {{each}}", 1, 3, "{{each}} can only be used as a block"),
        ("{{log x}}", 1, 1, "unknown helper 'log'"),
        ("{{> partial}}", 1, 1, "partials ({{> name}}) are not supported"),
        ("{{#if a}}\n {{> (lookup x 'y')}}{{/if}}", 2, 2, "partials"),
        ("{{lookup a ab=1 'k'}}", 1, 1, "hash arguments"),
        ("{{{{raw x}}}}a{{{{/raw}}}}", 1, 1, "raw blocks take no arguments"),
        ("  {{#if a}}\n  {{foo!}}\n{{/if}}\n", 2, 8, "cannot parse the tag '{{foo!}}'"),
        ("{{}}", 1, 3, "cannot parse the tag '{{}}'"),
        ("{{{x}}", 1, 6, "cannot parse the tag '{{{x}}'"),
        ("line one\nline {{two", 2, 11, "'{{two' is never closed"),
        ("a\r\nb {{x y=}}", 2, 8, "cannot parse"),
        ("é {{x$}}", 1, 6, "cannot parse the tag '{{x$}}'"),
    ],
)
def test_syntax_errors_name_part_line_and_column(
    source: str, line: int, column: int, message: str
) -> None:
    error = syntax_error(source)
    assert (error.part, error.line, error.column) == ("html", line, column)
    assert message in error.message
    assert str(error) == f"html: line {line}, column {column}: {error.message}"
    assert isinstance(error, ValueError)


def test_syntax_error_positions_survive_whitespace_control_and_long_text() -> None:
    source = (
        "x" * 500 + "\n  {{~#if a~}}  \n" + "y" * 300 + "{{#each b}}\n{{/each}} {{bad!}}{{/if}}"
    )
    error = syntax_error(source)
    assert (error.line, error.column) == (4, 16)
    assert source.splitlines()[error.line - 1][error.column - 1] == "!"


@pytest.mark.parametrize("part", ["subject", "html", "text"])
def test_syntax_error_names_the_part(part: str) -> None:
    error = syntax_error("ok {{#if x}}", part=part)
    assert error.part == part
    assert str(error).startswith(f"{part}: line 1, column 4")


def test_unclosed_block_is_an_error_although_pybars_accepts_it() -> None:
    # pybars3 0.9.7 compares its furthest parse position with the length: it accepts this
    # template and renders nothing. Our compile() must not.
    assert Compiler().compile("{{#if a}}x")({"a": True}) == ""
    syntax_error("{{#if a}}x")


def test_nesting_and_size_limits_are_syntax_errors_not_recursion_errors() -> None:
    depth = rendering.MAX_NESTING
    ok = "{{#if a}}" * depth + "x" + "{{/if}}" * depth
    assert render(ok, {"a": 1}) == "x"
    too_deep = "{{#if a}}" * (depth + 1) + "x" + "{{/if}}" * (depth + 1)
    assert "nested too deeply" in syntax_error(too_deep).message
    for levels in (depth + 1, 2_000):
        sub = "{{lookup " + "(lookup " * levels + "a 'b'" + ")" * levels + " 'c'}}"
        assert "nested too deeply" in syntax_error(sub).message
    many = "{{a}}" * (rendering.MAX_TAGS + 1)
    assert "too many tags" in syntax_error(many).message
    huge = "x" * (rendering.MAX_SOURCE_CHARS + 1)
    assert "too large" in syntax_error(huge).message
    unbalanced = "{{#if a}}" * 5_000
    assert "nested too deeply" in syntax_error(unbalanced).message


# --------------------------------------------------------------------------- parser glue


@pytest.mark.parametrize(
    "source",
    [
        "a  {{~x~}}  b",
        "{{#if a}}\n  x\n{{/if}}\n",
        "  {{#each a}}  \n{{this}}\n  {{/each}}  \n",
        "{{#if a}}\r\nx\r\n{{else}}\r\ny\r\n{{/if}}",
        "a\n  {{! comment }}  \nb",
        "{{~#if a~}} {{~else~}} {{~/if~}}",
        "x {{#if a}} y {{/if}} z\n",
    ],
)
def test_whitespace_control_matches_pybars(source: str) -> None:
    processed, _edits = scanner.whitespace_control(source)
    assert processed == Compiler().whitespace_control(source)


def test_long_literal_text_parses_fast_path_and_matches_slow_path() -> None:
    row = '<td style="padding: 10px">Lorem ipsum dolor sit amet</td>\n'
    source = row * 2_000 + "{{#each items}}<li>{{this}} and some more text</li>{{/each}}" + row
    expected = row * 2_000 + "<li>a and some more text</li><li>b and some more text</li>" + row
    assert render(source, {"items": ["a", "b"]}) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # literal text inside a raw block and inside string arguments is not template text
        (
            "{{{{raw}}}} a long raw text {{x}} with a tag {{{{/raw}}}}",
            " a long raw text {{x}} with a tag ",
        ),
        ("{{lookup m '}} not literal text at all {{'}}", "found"),
        (
            '{{lookup m "}} not literal text at all {{"}} and then a long literal',
            "found and then a long literal",
        ),
    ],
)
def test_text_that_only_looks_literal_is_parsed_exactly(source: str, expected: str) -> None:
    assert render(source, {"m": {"}} not literal text at all {{": "found"}}) == expected


def test_placeholder_character_in_source_is_plain_text() -> None:
    source = "\ue000 private use \ue0010\ue001 characters and more {{x}} text \ue000"
    assert render(source, {"x": 1}) == source.replace("{{x}}", "1")


# --------------------------------------------------------------------------- bounds


def test_nested_each_over_large_arrays_stops_early() -> None:
    data = {"a": list(range(1_000))}
    source = "{{#each a}}{{#each ../a}}{{#each ../../a}}{{/each}}{{/each}}{{/each}}"
    error = render_error(source, data)
    assert error.part == "html"
    assert "loop iterations" in error.message
    error = render_error(source.replace("{{/each}}", "x{{/each}}", 1), data)
    assert "loop iterations" in error.message


def test_iteration_bound_is_configurable() -> None:
    source = "{{#each a}}.{{/each}}"
    assert render(source, {"a": [1] * 10}, max_iterations=10) == "." * 10
    assert "loop iterations" in render_error(source, {"a": [1] * 11}, max_iterations=10).message


def test_output_bound_is_enforced_while_rendering() -> None:
    data = {"a": list(range(50_000)), "big": "x" * 1_000}
    error = render_error("{{#each a}}{{{../big}}}{{/each}}", data)
    assert "output larger than 2000000 bytes" in error.message


def test_output_bound_counts_utf8_bytes() -> None:
    assert render("{{x}}", {"x": "a" * 10}, max_output_bytes=10) == "a" * 10
    assert render("{{x}}", {"x": "é" * 5}, max_output_bytes=10) == "é" * 5
    assert "output larger" in render_error("{{x}}", {"x": "é" * 6}, max_output_bytes=10).message
    assert "output larger" in render_error("{{x}}!", {"x": "a" * 10}, max_output_bytes=10).message


def test_output_bound_covers_array_formatting_with_shared_references() -> None:
    row = list(range(10_000))
    error = render_error("{{a}}", {"a": [row] * 10_000})
    assert "output larger" in error.message


def test_output_bound_applies_per_part() -> None:
    compiled = CompiledTemplate.compile(
        subject="{{x}}", html="{{x}}{{x}}", text="{{x}}", max_output_bytes=4
    )
    with pytest.raises(TemplateRenderError) as info:
        compiled.render({"x": "abc"})
    assert info.value.part == "html"


def test_deeply_nested_data_never_crashes() -> None:
    deep_dict: dict[str, Any] = {}
    cursor = deep_dict
    for _ in range(10_000):
        cursor["x"] = {}
        cursor = cursor["x"]
    source = (
        "{{this}} {{x.x.x}} {{#with x}}{{#with x}}{{#each x}}{{@key}}{{/each}}{{/with}}{{/with}}"
    )
    assert render(source, deep_dict) == "[object Object] [object Object] x"

    deep_list: list[Any] = []
    cursor_list = deep_list
    for _ in range(10_000):
        cursor_list.append([])
        cursor_list = cursor_list[0]
    error = render_error("{{l}}", {"l": deep_list})
    assert "nested more than" in error.message
    assert render("{{l.0.0.0.length}}", {"l": deep_list}) == "1"


def test_huge_integer_is_a_render_error() -> None:
    assert "number too large" in render_error("{{n}}", {"n": 10**5000}).message


def test_render_errors_are_value_errors_naming_the_part() -> None:
    compiled = CompiledTemplate.compile(
        subject="{{#each a}}{{/each}}", html=None, text=None, max_iterations=1
    )
    with pytest.raises(ValueError, match=r"^subject: more than 1 loop iterations$"):
        compiled.render({"a": [1, 2]})


# --------------------------------------------------------------------------- cache & threads


@pytest.fixture
def empty_cache() -> Iterator[None]:
    clear_compiled_cache()
    yield
    clear_compiled_cache()


@pytest.mark.usefixtures("empty_cache")
def test_get_compiled_compiles_once_per_version() -> None:
    first = get_compiled("v1", subject="Hi {{n}}", html="<b>{{n}}</b>", text=None)
    again = get_compiled("v1", subject="Hi {{n}}", html="<b>{{n}}</b>", text=None)
    other = get_compiled("v2", subject="Yo {{n}}", html=None, text="{{n}}")
    assert first is again
    assert other is not first
    assert first.render({"n": "<x>"}) == RenderedMessage("Hi <x>", "<b>&lt;x&gt;</b>", None)
    assert other.render({"n": "<x>"}) == RenderedMessage("Yo <x>", None, "<x>")


@pytest.mark.usefixtures("empty_cache")
def test_get_compiled_is_a_bounded_lru() -> None:
    oldest = get_compiled("v0", subject="s", html=None, text="t")
    for index in range(1, rendering.CACHE_SIZE):
        get_compiled(f"v{index}", subject="s", html=None, text="t")
    assert get_compiled("v0", subject="s", html=None, text="t") is oldest  # now most recent
    get_compiled("new", subject="s", html=None, text="t")  # evicts v1, the least recent
    assert len(compiled._cache) == rendering.CACHE_SIZE
    assert "v1" not in compiled._cache
    assert get_compiled("v0", subject="s", html=None, text="t") is oldest


@pytest.mark.usefixtures("empty_cache")
def test_get_compiled_does_not_cache_failures() -> None:
    for _ in range(2):
        with pytest.raises(TemplateSyntaxError):
            get_compiled("bad", subject="{{#if}}", html=None, text="t")
    assert "bad" not in compiled._cache


def test_compile_and_render_from_many_threads() -> None:
    source = "{{#each items}}<li>{{name}} {{@index}}</li>{{/each}}" + "literal text " * 20
    expected = "<li>a 0</li><li>b 1</li>" + "literal text " * 20
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                compiled = CompiledTemplate.compile(subject="s", html=source, text=None)
                html = compiled.render({"items": [{"name": "a"}, {"name": "b"}]}).html
                results.append(html or "")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [expected] * 40


# --------------------------------------------------------------------------- derive_text


def test_derive_text_keeps_links_and_does_not_wrap() -> None:
    long_paragraph = " ".join(["word"] * 60)
    html = (
        "<html><head><style>p { color: red }</style></head><body>"
        "<h1>Welcome Jane</h1>"
        f"<p>{long_paragraph}</p>"
        '<p>Read <a href="https://example.com/a?b=1&amp;c=2">the guide</a> &amp; more.</p>'
        '<p><img src="logo.png" alt="ACME logo"></p>'
        "</body></html>"
    )
    text = derive_text(html)
    assert long_paragraph in text.splitlines()
    assert "[the guide](https://example.com/a?b=1&c=2)" in text
    assert "& more." in text
    assert "ACME logo" in text
    assert "color: red" not in text
    assert "<" not in text.replace("<https", "")
    assert text.endswith("\n")
    assert not text.endswith("\n\n")


def test_derive_text_is_plain_text_not_escaped_markdown() -> None:
    html = "<p>1. First</p><p>- dash</p><p>snake_case <b>bold</b> <i>it</i></p>"
    text = derive_text(html)
    assert "1. First" in text
    assert "- dash" in text
    assert "snake_case bold it" in text
    assert "\\" not in text
    assert "*" not in text


def test_derive_text_flattens_layout_tables() -> None:
    html = "<table><tr><td>Price</td><td>10 EUR</td></tr><tr><td>Total</td></tr></table>"
    assert derive_text(html) == "Price 10 EUR\nTotal\n"


def test_derive_text_of_rendered_html_keeps_variable_values() -> None:
    compiled = CompiledTemplate.compile(
        subject="s", html='<p>Hi {{name}}, <a href="{{url}}">confirm</a></p>', text=None
    )
    html = compiled.render({"name": "Ann & Bob", "url": "https://x.test/c?a=1"}).html
    assert html is not None
    assert derive_text(html) == "Hi Ann & Bob, [confirm](https://x.test/c?a=1)\n"


def test_renders_quickly_only_small_templates_with_every_part() -> None:
    small = CompiledTemplate.compile(subject="Hi {{n}}", html="<p>{{n}}</p>", text="{{n}}")
    assert small.renders_quickly
    assert CompiledTemplate.compile(subject="s", html=None, text="{{n}}").renders_quickly
    many = "{{n}}" * (compiled.INLINE_MAX_TAGS + 1)
    assert not CompiledTemplate.compile(subject="s", html=many, text="t").renders_quickly
    big = "x" * (compiled.INLINE_MAX_SOURCE_CHARS + 1)
    assert not CompiledTemplate.compile(subject="s", html=big, text="t").renders_quickly
    # No text part: it is derived from each rendered html (html2text is slow).
    assert not CompiledTemplate.compile(subject="s", html="<p>{{n}}</p>", text=None).renders_quickly


def test_derive_text_is_bounded() -> None:
    assert derive_text("<p>" + "x" * (rendering.MAX_DERIVE_INPUT_CHARS - 7) + "</p>")
    with pytest.raises(TemplateRenderError) as caught:
        derive_text("<p>" + "x" * rendering.MAX_DERIVE_INPUT_CHARS + "</p>")
    assert caught.value.part == "text"
