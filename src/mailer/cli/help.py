"""Plain `--help` for every command: arguments as NAME, options with a value as `--opt VALUE`,
flags without a type (Typer's own display reads `{name}`, `<str>`, `<bool>`)."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


def _argument_name(param: Any) -> str:
    name = str(param.metavar or param.name or "").upper()
    return f"{name}..." if param.nargs != 1 else name


def _usage(command: Any, ctx: Any) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
    return pieces


def _format_parameters(command: Any, ctx: Any, formatter: Any) -> None:
    arguments: list[tuple[str, str]] = []
    options: list[tuple[str, str]] = []
    for param in command.get_params(ctx):
        if param.param_type_name == "argument":
            if not param.hidden:
                extra = " [required]" if param.required else ""
                arguments.append((_argument_name(param), f"{param.help or ''}{extra}".strip()))
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            options.append(record)
    if arguments:
        with formatter.section("Arguments"):
            formatter.write_dl(arguments)
    if options:
        with formatter.section("Options"):
            formatter.write_dl(options)


class Command(TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage(self, ctx)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_parameters(self, ctx, formatter)


class Group(TyperGroup):
    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_parameters(self, ctx, formatter)
        self.format_commands(ctx, formatter)


def new_app(help: str, **kwargs: Any) -> typer.Typer:
    """A Typer (sub)app using the plain help above."""
    return typer.Typer(
        help=help,
        cls=Group,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        **kwargs,
    )
