"""mailer: a self-hosted bulk email service."""

__version__ = "0.1.0"
