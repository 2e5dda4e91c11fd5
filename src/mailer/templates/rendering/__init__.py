"""Safe Handlebars rendering.

pybars3 (pinned 0.9.7) is used only for its grammar: it turns a template into a syntax tree.
Its code generator is not used: it splices path segments into generated Python source
(`{{[x')or __import__('os')...or(']}}` executes code), resolves names with getattr, calls
callables found in data, keeps a non-thread-safe class-level builder and registers every
compiled template in `sys.modules`. Instead the tree is validated and turned into a small
evaluator here that reads only dict keys and list indices of JSON-like data (dict, list,
tuple, str, int, float, bool, None; anything else renders empty), counts output and loop
iterations while rendering, and knows only the built-in helpers if/unless/each/with/lookup.

Decisions (see tests/templates/test_rendering.py):
- `{{x}}` is HTML-escaped in the html part only; subject and text are never escaped.
- Partials (`{{> x}}`), helpers other than the built-ins, hash arguments (`k=v`) and
  `{{else if}}` are syntax errors at compile time.
- `{{name}}` with no arguments is a variable lookup; a missing variable renders empty.
- Values render like handlebars.js: true/false, 3 (for 3.0), arrays joined by ",",
  objects as "[object Object]".

Modules: `scanner` (whitespace control, tag scan, source limits), `parser` (the pybars
grammar adapter), `evaluator` (syntax tree -> ops, and running them on data), `compiled`
(CompiledTemplate and the cache of compiled versions), `text` (plain text from HTML).
"""

from mailer.templates.rendering.compiled import (
    CACHE_SIZE,
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_MAX_OUTPUT_BYTES,
    CompiledTemplate,
    RenderedMessage,
    TemplateRenderError,
    TemplateSyntaxError,
    clear_compiled_cache,
    compiles_quickly,
    get_compiled,
    peek_compiled,
)
from mailer.templates.rendering.evaluator import HELPERS, MAX_DATA_DEPTH
from mailer.templates.rendering.scanner import MAX_NESTING, MAX_SOURCE_CHARS, MAX_TAGS
from mailer.templates.rendering.text import MAX_DERIVE_INPUT_CHARS, derive_text

__all__ = [
    "CACHE_SIZE",
    "DEFAULT_MAX_ITERATIONS",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "HELPERS",
    "MAX_DATA_DEPTH",
    "MAX_DERIVE_INPUT_CHARS",
    "MAX_NESTING",
    "MAX_SOURCE_CHARS",
    "MAX_TAGS",
    "CompiledTemplate",
    "RenderedMessage",
    "TemplateRenderError",
    "TemplateSyntaxError",
    "clear_compiled_cache",
    "compiles_quickly",
    "derive_text",
    "get_compiled",
    "peek_compiled",
]
