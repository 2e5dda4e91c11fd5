"""The `mailer` command line (Typer). Subcommands live in one module each."""

from mailer.cli.main import app, main

__all__ = ["app", "main"]
