"""The console: a web interface for the people who run mailer, served by the API process at
/console/. Server-rendered HTML (Jinja2), a little JavaScript, no external assets."""

from mailer.console.site import create_console

__all__ = ["create_console"]
